package cli

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
)

// knownHostsName is banger's own known_hosts file in the state directory,
// shared by `vm ssh` and `ssh-config`; the daemon drops a VM's entries from
// it when the VM is deleted or re-created.
const knownHostsName = "known_hosts"

// addSSHCommands registers `vm ssh` and `ssh-config`.
func (a *app) addSSHCommands(root *cobra.Command) {
	for _, c := range root.Commands() {
		if c.Name() == "vm" {
			c.AddCommand(a.vmSSHCmd())
		}
	}
	if a.wants("ssh-config") {
		root.AddCommand(a.sshConfigCmd())
	}
}

func (a *app) vmSSHCmd() *cobra.Command {
	var start, noReminder bool
	cmd := &cobra.Command{
		Use:   "ssh VM [-- COMMAND...]",
		Short: "Open a root shell in a VM, or run one command there",
		Long: `Runs the system ssh as root@<guest-ip> with the runtime bundle's key and banger's own
known_hosts file. With a command after --, runs it and exits with its exit code (255 means ssh
itself failed). A suspended or paused VM is woken first. Right after a VM starts, connection
failures are retried until boot_deadline.
After an interactive login ends, one line on stderr reminds you when the VM is still running.`,
		Example: `  banger vm ssh dev
  banger vm ssh --start dev
  banger vm ssh dev -- uname -a`,
		Args: func(c *cobra.Command, args []string) error {
			n := c.ArgsLenAtDash()
			if n == -1 {
				n = len(args)
			}
			switch {
			case n == 0:
				return usageErrorf("vm ssh needs a VM name (see `banger vm ssh --help`)")
			case n > 1:
				return usageErrorf("vm ssh takes one VM; put the command after --: banger vm ssh %s -- %s", args[0], args[1])
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			var command []string
			if n := c.ArgsLenAtDash(); n >= 0 {
				command = args[n:]
				if len(command) == 0 {
					return usageErrorf("nothing after --: give a command, or drop the -- for a login shell")
				}
			}
			bin, err := exec.LookPath("ssh")
			if err != nil {
				return failf("ssh is not on PATH: install the OpenSSH client (Debian: apt install openssh-client)")
			}
			l, err := a.config()
			if err != nil {
				return err
			}
			key := l.Config.SSHKeyPath
			if _, err := os.Stat(key); err != nil {
				return failf("ssh key %s: %v; install the runtime bundle or set ssh_key_path in %s", key, errMessage(err), l.Paths.ConfigFile)
			}
			cl, err := a.client(c.Context())
			if err != nil {
				return err
			}
			s := &sshSession{
				daemon:       cl,
				run:          execSSH(bin, os.Stdin, a.stdout, a.stderr),
				stderr:       a.stderr,
				now:          time.Now,
				sleep:        sleepCtx,
				key:          key,
				knownHosts:   filepath.Join(l.Paths.StateDir, knownHostsName),
				bootDeadline: l.Config.BootDeadline,
				startFirst:   start,
				reminder:     !noReminder,
				progress: func(ctx context.Context, name string) func() {
					return a.progress(ctx, cl, false, name)
				},
			}
			code, err := s.connect(c.Context(), args[0], command)
			if err != nil {
				return err
			}
			if code != 0 {
				return &silentExit{code: code}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&start, "start", false, "start the VM first when it is stopped")
	f.BoolVar(&noReminder, "no-reminder", false, "do not remind that the VM is still running after the login ends")
	return cmd
}

// sshPathArg renders a path for an ssh option value: ssh expands %
// tokens in these paths and splits them at spaces unless quoted.
func sshPathArg(p string) string {
	p = escapePercent(p)
	if containsSpace(p) {
		return `"` + p + `"`
	}
	return p
}

func escapePercent(p string) string {
	out := make([]byte, 0, len(p))
	for i := 0; i < len(p); i++ {
		if p[i] == '%' {
			out = append(out, '%')
		}
		out = append(out, p[i])
	}
	return string(out)
}

func containsSpace(s string) bool {
	for _, r := range s {
		if r == ' ' || r == '\t' {
			return true
		}
	}
	return false
}

// sshArgs builds ssh's argument list (without argv[0]) for root@host. The
// `--` before the destination keeps a command's own dashes away from ssh's
// option parser.
func sshArgs(key, knownHosts, host string, command []string) []string {
	args := []string{
		"-i", escapePercent(key), // taken verbatim: not split, only %-expanded
		"-o", "IdentitiesOnly=yes",
		"-o", "UserKnownHostsFile=" + sshPathArg(knownHosts),
		"-o", "StrictHostKeyChecking=accept-new",
		"-o", "ConnectTimeout=" + fmt.Sprint(int(sshConnectTimeout/time.Second)),
		"--", "root@" + host,
	}
	return append(args, command...)
}

// sshConnectTimeout bounds one ssh connection attempt.
const sshConnectTimeout = 5 * time.Second
