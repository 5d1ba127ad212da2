//go:build !banger_front

package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"banger/internal/api"
	"banger/internal/client"
	"banger/internal/hostops"
)

const unitName = "bangerd.service"

// bangerEnvNames are read even when only the injected getenv knows them.
var bangerEnvNames = []string{"BANGER_CONFIG", "BANGER_STATE_DIR", "BANGER_DAEMON_BIN"}

func (a *app) daemonInstallCmd() *cobra.Command {
	var uninstall bool
	cmd := &cobra.Command{
		Use:   "install [--uninstall]",
		Short: "Run bangerd as a systemd user service (KillMode=process: restarting it never stops VMs)",
		Long: `Writes ~/.config/systemd/user/bangerd.service for the bangerd next to this banger,
with the BANGER_* variables set now, then runs systemctl --user daemon-reload and
enable --now. A bangerd started on demand is stopped first (its VMs keep running and
the service adopts them). --uninstall disables the service and removes the unit;
banger then goes back to starting bangerd on demand.`,
		Example: "  banger daemon install\n  banger daemon install --uninstall",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			path, err := a.unitPath()
			if err != nil {
				return err
			}
			if uninstall {
				return a.uninstallUnit(c.Context(), path)
			}
			return a.installUnit(c.Context(), path)
		},
	}
	cmd.Flags().BoolVar(&uninstall, "uninstall", false, "disable the service and remove its unit file")
	return cmd
}

func (a *app) unitPath() (string, error) {
	dir := a.getenv("XDG_CONFIG_HOME")
	if dir == "" {
		home := a.getenv("HOME")
		if home == "" {
			return "", failf("neither XDG_CONFIG_HOME nor HOME is set; cannot place the systemd user unit")
		}
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "systemd", "user", unitName), nil
}

// unitEnv lists the BANGER_* variables set now, as KEY=value, sorted.
func (a *app) unitEnv() []string {
	names := slices.Clone(bangerEnvNames)
	for _, kv := range os.Environ() {
		if k, _, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "BANGER_") {
			names = append(names, k)
		}
	}
	slices.Sort(names)
	names = slices.Compact(names)
	var env []string
	for _, k := range names {
		if v := a.getenv(k); v != "" {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// unitFile renders the systemd user unit for bangerd at bin.
func unitFile(bin string, env []string) string {
	var b strings.Builder
	b.WriteString(`[Unit]
Description=banger daemon: Firecracker microVMs for development

[Service]
Type=simple
`)
	fmt.Fprintf(&b, "ExecStart=%s\n", systemdQuote(bin))
	for _, kv := range env {
		fmt.Fprintf(&b, "Environment=%s\n", systemdQuote(kv))
	}
	b.WriteString(`# VMs are bangerd's children in their own sessions: only bangerd itself is
# stopped on restart, and the next bangerd adopts the running VMs.
KillMode=process
Restart=on-failure
RestartSec=2s

[Install]
WantedBy=default.target
`)
	return b.String()
}

// systemdQuote quotes a value for a unit file line when needed, and escapes
// % specifiers.
func systemdQuote(s string) string {
	s = strings.ReplaceAll(s, "%", "%%")
	if !strings.ContainsAny(s, " \t\"'\\") {
		return s
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return `"` + r.Replace(s) + `"`
}

func (a *app) installUnit(ctx context.Context, path string) error {
	bin, err := a.daemonBinary()
	if err != nil {
		return err
	}
	if bin, err = filepath.Abs(bin); err != nil {
		return failf("resolving the bangerd path: %v", err)
	}
	if fi, err := os.Stat(bin); err != nil || fi.IsDir() {
		return failf("bangerd not found at %s; install it with `make install` or set BANGER_DAEMON_BIN", bin)
	}
	if err := a.checkUserManager(ctx); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return failf("creating %s: %v", filepath.Dir(path), err)
	}
	if err := os.WriteFile(path, []byte(unitFile(bin, a.unitEnv())), 0o644); err != nil {
		return failf("writing %s: %v", path, err)
	}
	fmt.Fprintf(a.stdout, "wrote %s\n", path)
	if err := a.stopOnDemandDaemon(ctx); err != nil {
		return err
	}
	for _, args := range [][]string{{"--user", "daemon-reload"}, {"--user", "enable", "--now", unitName}} {
		if _, err := hostops.Run(ctx, "systemctl", args...); err != nil {
			return failf("%v", err)
		}
	}
	fmt.Fprintf(a.stdout, "enabled %s: bangerd starts at login and restarts on failure; restarting it leaves VMs running\n", unitName)
	return nil
}

func (a *app) uninstallUnit(ctx context.Context, path string) error {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(a.stdout, "%s is not installed (no %s)\n", unitName, path)
		return nil
	}
	if err := a.checkUserManager(ctx); err != nil {
		return err
	}
	if _, err := hostops.Run(ctx, "systemctl", "--user", "disable", "--now", unitName); err != nil {
		return failf("%v", err)
	}
	if err := os.Remove(path); err != nil {
		return failf("removing %s: %v", path, err)
	}
	if _, err := hostops.Run(ctx, "systemctl", "--user", "daemon-reload"); err != nil {
		return failf("%v", err)
	}
	fmt.Fprintf(a.stdout, "disabled %s and removed %s; banger starts bangerd on demand again (VMs kept running)\n", unitName, path)
	return nil
}

// stopOnDemandDaemon stops a running bangerd so the service can take over
// its socket; its VMs keep running and the service adopts them.
func (a *app) stopOnDemandDaemon(ctx context.Context) error {
	l, err := a.config()
	if err != nil {
		return err
	}
	cl := client.New(l.Paths.Socket)
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	st, err := cl.Ping(pctx)
	cancel()
	if err != nil {
		return nil // none running
	}
	fmt.Fprintf(a.stdout, "stopping the running bangerd (pid %d) so the service can take over; VMs keep running\n", st.PID)
	if err := cl.Call(ctx, api.MethodDaemonStop, nil, nil); err != nil {
		return err
	}
	deadline := time.Now().Add(35 * time.Second)
	for time.Now().Before(deadline) {
		if unix.Kill(st.PID, 0) != nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return failf("bangerd (pid %d) did not exit within 35s; see %s", st.PID, l.Paths.LogFile)
}

// checkUserManager makes sure systemctl --user can reach a user manager
// before install or uninstall changes anything: without a user session
// (no login, no lingering) systemctl fails with "Failed to connect to bus"
// after the unit was written and the running daemon stopped.
func (a *app) checkUserManager(ctx context.Context) error {
	user := a.getenv("USER")
	if user == "" {
		user = "$USER"
	}
	hint := fmt.Sprintf("nothing was changed; start your user manager with `loginctl enable-linger %s` (it then runs without a login), or run this from a login session (ssh, console or desktop)", user)
	rt := a.getenv("XDG_RUNTIME_DIR")
	if rt == "" {
		return failf("no systemd user session: XDG_RUNTIME_DIR is not set, so systemctl --user has no bus to connect to; %s", hint)
	}
	private, bus := filepath.Join(rt, "systemd", "private"), filepath.Join(rt, "bus")
	if !isSocket(private) && !isSocket(bus) {
		return failf("no systemd user session: no user manager listens in %s (neither bus nor systemd/private), so systemctl --user cannot connect; %s", rt, hint)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "systemctl", "--user", "is-system-running")
	cmd.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+rt)
	out, _ := cmd.CombinedOutput() // is-system-running exits non-zero when degraded
	state := oneLine(string(out))
	switch state {
	case "running", "degraded", "starting", "initializing", "maintenance":
		return nil
	}
	if state == "" {
		state = "nothing"
	}
	return failf("no systemd user session: `systemctl --user is-system-running` answered %q; %s", state, hint)
}

func isSocket(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode()&os.ModeSocket != 0
}
