package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"banger/internal/api"
	"banger/internal/client"
	"banger/internal/config"
)

const daemonStartTimeout = 15 * time.Second

func (a *app) daemonCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "daemon",
		Short: "Start, stop and inspect bangerd",
	}
	var jsonOut bool
	status := &cobra.Command{
		Use:   "status",
		Short: "Show whether bangerd runs (exit 3 when it does not); never starts it",
		Example: `  banger daemon status
  banger daemon status --json`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			l, err := a.config()
			if err != nil {
				return err
			}
			cl := client.New(l.Paths.Socket)
			ctx, cancel := context.WithTimeout(c.Context(), 5*time.Second)
			defer cancel()
			st, err := cl.Ping(ctx)
			if err != nil {
				if errors.Is(err, client.ErrNoDaemon) {
					if jsonOut {
						_ = json.NewEncoder(a.stdout).Encode(map[string]any{"running": false, "socket": l.Paths.Socket})
					} else {
						fmt.Fprintf(a.stdout, "bangerd is not running (socket %s); start it with `banger daemon start`\n", l.Paths.Socket)
					}
					return &silentExit{code: ExitNoDaemon}
				}
				return err
			}
			if jsonOut {
				return writeJSON(a.stdout, struct {
					Running bool `json:"running"`
					api.DaemonStatus
				}{true, st})
			}
			printStatus(a, st)
			return nil
		},
	}
	status.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	start := &cobra.Command{
		Use:   "start",
		Short: "Start bangerd in the background and wait until it answers",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			l, _, running, err := a.ping(c.Context())
			if err != nil {
				return err
			}
			if running != nil {
				fmt.Fprintf(a.stdout, "bangerd already running (pid %d)\n", running.PID)
				return nil
			}
			st, err := a.startDaemon(c.Context())
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "bangerd started (pid %d, socket %s)\n", st.PID, l.Paths.Socket)
			return nil
		},
	}
	stop := &cobra.Command{
		Use:   "stop",
		Short: "Stop bangerd (VMs keep running and are adopted at the next start)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			l, cl, st, err := a.ping(c.Context())
			if err != nil {
				return err
			}
			if st == nil {
				fmt.Fprintln(a.stdout, "bangerd is not running")
				return nil
			}
			if err := cl.Call(c.Context(), api.MethodDaemonStop, nil, nil); err != nil {
				return err
			}
			deadline := time.Now().Add(35 * time.Second)
			for time.Now().Before(deadline) {
				if unix.Kill(st.PID, 0) != nil {
					fmt.Fprintf(a.stdout, "bangerd stopped (pid %d)\n", st.PID)
					return nil
				}
				time.Sleep(50 * time.Millisecond)
			}
			return failf("bangerd (pid %d) did not exit within 35s; see %s", st.PID, l.Paths.LogFile)
		},
	}
	cmd.AddCommand(status, start, stop)
	return cmd
}

// ping asks the daemon for its status without starting it: st is nil when
// none answers.
func (a *app) ping(ctx context.Context) (*config.Loaded, *client.Client, *api.DaemonStatus, error) {
	l, err := a.config()
	if err != nil {
		return nil, nil, nil, err
	}
	cl := client.New(l.Paths.Socket)
	st, err := cl.Ping(ctx)
	if errors.Is(err, client.ErrNoDaemon) {
		return l, cl, nil, nil
	}
	if err != nil {
		return nil, nil, nil, err
	}
	return l, cl, &st, nil
}

func printStatus(a *app, st api.DaemonStatus) {
	w := newTable(a.stdout)
	w.row("pid", fmt.Sprint(st.PID))
	w.row("version", st.Version+" ("+st.Commit+")")
	w.row("socket", st.Socket)
	w.row("state dir", st.StateDir)
	w.row("uptime", humanDuration(time.Duration(st.UptimeS*float64(time.Second))))
	w.row("privileged ops", st.Privileged)
	switch {
	case st.DNSProblem != "" && len(st.DNSListen) > 0:
		w.row("dns", st.DNSProblem+" (serving on "+strings.Join(st.DNSListen, ", ")+")")
	case st.DNSProblem != "":
		w.row("dns", st.DNSProblem)
	case len(st.DNSListen) > 0:
		w.row("dns", strings.Join(st.DNSListen, ", "))
	}
	var parts []string
	keys := make([]string, 0, len(st.VMCounts))
	for k := range st.VMCounts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d %s", st.VMCounts[k], k))
	}
	if len(parts) == 0 {
		parts = []string{"none"}
	}
	w.row("vms", strings.Join(parts, ", "))
	w.flush()
}

// client returns a client for a running daemon, starting bangerd on demand
// (and saying so on stderr).
func (a *app) client(ctx context.Context) (*client.Client, error) {
	if a.cl != nil {
		return a.cl, nil
	}
	l, err := a.config()
	if err != nil {
		return nil, err
	}
	cl := client.New(l.Paths.Socket)
	// A connect is enough to know a daemon listens (the socket is removed on
	// shutdown and a stale one refuses connections); it saves a round trip
	// on every command.
	if conn, err := net.DialTimeout("unix", l.Paths.Socket, 2*time.Second); err == nil {
		conn.Close()
		a.cl = cl
		return cl, nil
	}
	fmt.Fprintln(a.stderr, "banger: bangerd is not running; starting it")
	if _, err := a.startDaemon(ctx); err != nil {
		return nil, err
	}
	a.cl = cl
	return cl, nil
}

// daemonBinary finds bangerd: BANGER_DAEMON_BIN, next to this executable,
// then PATH.
func (a *app) daemonBinary() (string, error) {
	if p := a.getenv("BANGER_DAEMON_BIN"); p != "" {
		if fi, err := os.Stat(p); err != nil || fi.IsDir() {
			return "", failf("bangerd not found at %s (BANGER_DAEMON_BIN); unset it or point it at bangerd", p)
		}
		return p, nil
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "bangerd")
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p, nil
		}
	}
	if p, err := exec.LookPath("bangerd"); err == nil {
		return p, nil
	}
	return "", failf("cannot find bangerd next to banger or on PATH; install it with `make install`")
}

// startDaemon starts bangerd in the background under a start lock so two
// concurrent starts end with one daemon, then waits until it answers.
func (a *app) startDaemon(ctx context.Context) (api.DaemonStatus, error) {
	l, err := a.config()
	if err != nil {
		return api.DaemonStatus{}, err
	}
	if err := os.MkdirAll(l.Paths.SocketDir, 0o700); err != nil {
		return api.DaemonStatus{}, fmt.Errorf("creating %s: %w", l.Paths.SocketDir, err)
	}
	lockPath := filepath.Join(l.Paths.SocketDir, "start.lock")
	lf, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return api.DaemonStatus{}, fmt.Errorf("opening %s: %w", lockPath, err)
	}
	defer lf.Close()
	if err := unix.Flock(int(lf.Fd()), unix.LOCK_EX); err != nil {
		return api.DaemonStatus{}, fmt.Errorf("locking %s: %w", lockPath, err)
	}
	defer unix.Flock(int(lf.Fd()), unix.LOCK_UN)

	cl := client.New(l.Paths.Socket)
	if st, err := cl.Ping(ctx); err == nil {
		return st, nil // another command started it meanwhile
	}
	bin, err := a.daemonBinary()
	if err != nil {
		return api.DaemonStatus{}, err
	}
	if err := os.MkdirAll(l.Paths.StateDir, 0o700); err != nil {
		return api.DaemonStatus{}, fmt.Errorf("creating %s: %w", l.Paths.StateDir, err)
	}
	errPath := filepath.Join(l.Paths.StateDir, "bangerd.stderr")
	errFile, err := os.OpenFile(errPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return api.DaemonStatus{}, fmt.Errorf("opening %s: %w", errPath, err)
	}
	defer errFile.Close()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return api.DaemonStatus{}, err
	}
	defer devnull.Close()
	cmd := exec.Command(bin, "--background")
	cmd.Stdin = devnull
	cmd.Stdout = errFile
	cmd.Stderr = errFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return api.DaemonStatus{}, failf("starting %s: %v", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(daemonStartTimeout)
	for time.Now().Before(deadline) {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := cl.Ping(pctx)
		cancel()
		if err == nil {
			return st, nil
		}
		select {
		case err := <-exited:
			var ee *exec.ExitError
			if errors.As(err, &ee) && ee.ExitCode() == 3 {
				// Another bangerd holds the daemon lock and is still
				// starting (one started by hand or by systemd): wait
				// for it to answer rather than fail.
				exited = nil
				continue
			}
			msg := lastLine(errPath)
			if msg == "" {
				msg = "no output; see " + l.Paths.LogFile
			}
			return api.DaemonStatus{}, failf("bangerd exited during start: %s", strings.TrimPrefix(msg, "bangerd: "))
		case <-time.After(40 * time.Millisecond):
		case <-ctx.Done():
			return api.DaemonStatus{}, ctx.Err()
		}
	}
	return api.DaemonStatus{}, failf("bangerd did not answer on %s within %s; see %s", l.Paths.Socket, daemonStartTimeout, l.Paths.LogFile)
}

func lastLine(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}
