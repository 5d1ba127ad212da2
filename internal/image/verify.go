package image

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"banger/internal/api"
	"banger/internal/command"
)

// VMs is what Verify needs from the daemon.
type VMs interface {
	CreateVM(ctx context.Context, p api.VMCreateParams) (api.VMResult, error)
	DeleteVM(ctx context.Context, ref string) error
}

// SSHRunner runs one command in a guest over SSH and returns its stdout and
// exit code (255: ssh itself failed). err is for failures to run ssh at all.
type SSHRunner interface {
	RunSSH(ctx context.Context, host, command string) (stdout string, code int, err error)
}

// Check is one row of the verify table.
type Check struct {
	Name   string `json:"name"`
	Pass   bool   `json:"pass"`
	Detail string `json:"detail"`
}

// VerifyReport is the outcome of Verify.
type VerifyReport struct {
	Image  string  `json:"image"`
	VM     string  `json:"vm"`
	Checks []Check `json:"checks"`
}

// Passed reports whether every check passed.
func (r *VerifyReport) Passed() bool {
	for _, c := range r.Checks {
		if !c.Pass {
			return false
		}
	}
	return len(r.Checks) > 0
}

// VerifyOptions configure Verify.
type VerifyOptions struct {
	Image       string
	Name        string // the throwaway VM's name; "" means VerifyVMName()
	VMs         VMs
	SSH         SSHRunner
	SSHDeadline time.Duration // how long to retry until sshd answers; 0 means 60s
	Sleep       func(ctx context.Context, d time.Duration) error
}

// Guest commands of the checks. The agent-unit check covers both init
// systems: systemd (Debian) and runit (Void, a link in /var/service).
const (
	cmdRootShell = "getent passwd root"
	cmdWorkDisk  = "findmnt -n -o SOURCE /root"
	cmdAgentUnit = "if command -v systemctl >/dev/null 2>&1; then systemctl is-enabled banger-agent; " +
		"elif test -L /var/service/banger-agent; then echo enabled; else echo disabled; fi"
)

// VerifyVMName returns a fresh throwaway VM name.
func VerifyVMName() string {
	b := make([]byte, 3)
	rand.Read(b)
	return "verify-" + hex.EncodeToString(b)
}

// Verify boots a throwaway VM from the image, waits for its agent (the
// create result) and SSH, runs the checks, and always deletes the VM.
func Verify(ctx context.Context, opts VerifyOptions) (rep *VerifyReport, err error) {
	name := opts.Name
	if name == "" {
		name = VerifyVMName()
	}
	rep = &VerifyReport{Image: opts.Image, VM: name}
	if opts.SSHDeadline == 0 {
		opts.SSHDeadline = 60 * time.Second
	}
	sleep := opts.Sleep
	if sleep == nil {
		sleep = func(ctx context.Context, d time.Duration) error {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(d):
				return nil
			}
		}
	}
	defer func() {
		// Delete even when ctx was cancelled (Ctrl-C).
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		if derr := opts.VMs.DeleteVM(dctx, name); derr != nil {
			var ae *api.Error
			if errors.As(derr, &ae) && ae.Data.Kind == api.KindNotFound {
				return
			}
			err = errors.Join(err, fmt.Errorf("deleting throwaway vm %s: %w (delete it with `banger vm delete %s`)", name, derr, name))
		}
	}()

	res, err := opts.VMs.CreateVM(ctx, api.VMCreateParams{Name: name, Image: opts.Image})
	if err != nil {
		return rep, fmt.Errorf("creating throwaway vm %s from image %s: %w", name, opts.Image, err)
	}
	agent := Check{Name: "agent health"}
	switch h := res.Health; {
	case h == nil:
		agent.Detail = "vm did not report its agent's health (state " + res.VM.State + ")"
	case h.Healthy:
		agent.Pass, agent.Detail = true, fmt.Sprintf("answered in %.1f ms", h.RTTMillis)
	default:
		agent.Detail = "unhealthy: " + h.Reason
	}
	rep.Checks = append(rep.Checks, agent)
	host := res.VM.IP
	if !agent.Pass || host == "" {
		for _, n := range []string{"ssh", "root shell", "/root work disk", "agent unit"} {
			rep.Checks = append(rep.Checks, Check{Name: n, Detail: "not run: the agent never answered"})
		}
		return rep, nil
	}

	// sshd may come up a little after the agent: retry while ssh itself
	// fails (exit 255).
	sshCheck := Check{Name: "ssh"}
	start := time.Now()
	var shellOut string
	for {
		out, code, rerr := opts.SSH.RunSSH(ctx, host, cmdRootShell)
		if rerr != nil {
			return rep, rerr
		}
		if code != 255 {
			sshCheck.Pass, sshCheck.Detail = true, fmt.Sprintf("root@%s answered after %s", host, time.Since(start).Round(100*time.Millisecond))
			shellOut = out
			if code != 0 {
				shellOut = ""
			}
			break
		}
		if time.Since(start) >= opts.SSHDeadline {
			sshCheck.Detail = fmt.Sprintf("root@%s did not answer within %s: %s", host, opts.SSHDeadline, firstLine(out))
			break
		}
		if err := sleep(ctx, time.Second); err != nil {
			return rep, err
		}
	}
	rep.Checks = append(rep.Checks, sshCheck)
	if !sshCheck.Pass {
		for _, n := range []string{"root shell", "/root work disk", "agent unit"} {
			rep.Checks = append(rep.Checks, Check{Name: n, Detail: "not run: ssh failed"})
		}
		return rep, nil
	}

	rep.Checks = append(rep.Checks, checkShell(shellOut))
	out, code, err := opts.SSH.RunSSH(ctx, host, cmdWorkDisk)
	if err != nil {
		return rep, err
	}
	disk := Check{Name: "/root work disk", Detail: fmt.Sprintf("/root is mounted from %q, want /dev/vdb", strings.TrimSpace(out))}
	if code == 0 && strings.TrimSpace(out) == "/dev/vdb" {
		disk.Pass, disk.Detail = true, "/root is /dev/vdb"
	} else if code != 0 {
		disk.Detail = "/root is not a mount point (findmnt found nothing); want /dev/vdb"
	}
	rep.Checks = append(rep.Checks, disk)

	out, code, err = opts.SSH.RunSSH(ctx, host, cmdAgentUnit)
	if err != nil {
		return rep, err
	}
	unit := Check{Name: "agent unit", Detail: fmt.Sprintf("banger-agent is %q, want enabled", strings.TrimSpace(out))}
	if code == 0 && strings.TrimSpace(out) == "enabled" {
		unit.Pass, unit.Detail = true, "banger-agent is enabled"
	}
	rep.Checks = append(rep.Checks, unit)
	return rep, nil
}

func checkShell(passwd string) Check {
	c := Check{Name: "root shell"}
	line := firstLine(passwd)
	f := strings.Split(line, ":")
	if len(f) != 7 || f[0] != "root" {
		c.Detail = fmt.Sprintf("getent passwd root gave %q", line)
		return c
	}
	shell := f[6]
	if strings.HasSuffix(shell, "/bash") {
		c.Pass, c.Detail = true, shell
	} else {
		c.Detail = fmt.Sprintf("root's shell is %s, want bash", shell)
	}
	return c
}

// SystemSSH runs the system ssh with banger's key and known_hosts, the way
// `banger vm ssh` does, non-interactively.
type SystemSSH struct {
	Bin        string // "ssh" when empty (looked up on PATH)
	Key        string
	KnownHosts string
	Timeout    time.Duration // ConnectTimeout; 0 means 5s
}

// Args returns ssh's argument list for running command on root@host.
func (s SystemSSH) Args(host, command string) []string {
	t := s.Timeout
	if t == 0 {
		t = 5 * time.Second
	}
	return []string{
		"-i", escapePercent(s.Key),
		"-o", "IdentitiesOnly=yes",
		"-o", "UserKnownHostsFile=" + sshPathArg(s.KnownHosts),
		"-o", "StrictHostKeyChecking=accept-new",
		"-o", "BatchMode=yes",
		"-o", fmt.Sprintf("ConnectTimeout=%d", int(t/time.Second)),
		"-o", "LogLevel=ERROR",
		"--", "root@" + host, command,
	}
}

// RunSSH implements SSHRunner.
func (s SystemSSH) RunSSH(ctx context.Context, host, remote string) (string, int, error) {
	bin := s.Bin
	if bin == "" {
		bin = "ssh"
	}
	path, err := command.LookPath(bin)
	if err != nil {
		return "", 0, fmt.Errorf("ssh is not on PATH: install the OpenSSH client (Debian: apt install openssh-client)")
	}
	out, errb, err := command.Output(ctx, path, s.Args(host, remote)...)
	code := command.ExitCode(err)
	switch {
	case err == nil:
		return string(out), 0, nil
	case code >= 0:
		text := string(out)
		if code == 255 {
			text = string(errb)
		}
		return text, code, nil
	default: // it did not start, or a signal (a cancelled ctx) killed it
		return "", 0, fmt.Errorf("running ssh to %s: %w", host, errors.Unwrap(err))
	}
}

// escapePercent doubles % so ssh does not expand tokens in a path.
func escapePercent(p string) string { return strings.ReplaceAll(p, "%", "%%") }

// sshPathArg renders a path as an ssh option value: %-escaped, and quoted
// when it holds blanks.
func sshPathArg(p string) string {
	p = escapePercent(p)
	if strings.ContainsAny(p, " \t") {
		return `"` + p + `"`
	}
	return p
}
