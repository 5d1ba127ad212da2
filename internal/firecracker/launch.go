package firecracker

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"banger/internal/procwatch"
)

// MaxSocketPath is the longest unix socket path Firecracker can bind:
// sun_path holds 108 bytes including the terminating NUL.
const MaxSocketPath = 107

// LaunchSpec describes one Firecracker process.
type LaunchSpec struct {
	Binary      string   // path to firecracker (or a name looked up in PATH)
	APISock     string   // --api-sock; at most MaxSocketPath bytes
	ID          string   // --id; 1..64 characters of [A-Za-z0-9-]
	LogPath     string   // --log-path; created (0600) if missing
	ConsolePath string   // serial console: stdout and stderr appended here; /dev/null when empty
	Env         []string // added to the daemon's environment
}

// Args returns the command-line arguments (without argv[0]) for s, in the
// `--flag value` form Firecracker requires.
func Args(s LaunchSpec) []string {
	args := []string{"--api-sock", s.APISock, "--id", s.ID}
	if s.LogPath != "" {
		args = append(args, "--log-path", s.LogPath)
	}
	return append(args, "--level", "Info")
}

// CheckSocketPath errors when p cannot be bound as a unix socket because it is
// empty or longer than MaxSocketPath bytes.
func CheckSocketPath(p string) error {
	if p == "" {
		return errors.New("unix socket path is empty")
	}
	if len(p) > MaxSocketPath {
		return fmt.Errorf("unix socket path %q is %d bytes, over the %d-byte limit; set a shorter BANGER_STATE_DIR (or XDG_STATE_HOME) so VM directories get shorter paths", p, len(p), MaxSocketPath)
	}
	return nil
}

// ValidateID checks a Firecracker instance id: 1..64 characters, each
// alphanumeric or '-'. Firecracker aborts (SIGABRT) on anything else.
func ValidateID(id string) error {
	if id == "" || len(id) > 64 {
		return fmt.Errorf("firecracker id %q must be 1..64 characters", id)
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
			return fmt.Errorf("firecracker id %q may contain only letters, digits and '-'", id)
		}
	}
	return nil
}

// Launch starts Firecracker as described by s, in a new session so it
// outlives the daemon. It first refuses a bad spec or an API socket that a
// live process already serves, then removes a stale socket file (Firecracker
// never unlinks it and refuses to start when it exists). The process is
// watched (and reaped) by w.
func Launch(ctx context.Context, w *procwatch.Watcher, s LaunchSpec) (*procwatch.Proc, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("launching firecracker %s: %w", s.ID, err)
	}
	if err := ValidateID(s.ID); err != nil {
		return nil, fmt.Errorf("launching firecracker: %w", err)
	}
	if err := CheckSocketPath(s.APISock); err != nil {
		return nil, fmt.Errorf("launching firecracker %s: %w", s.ID, err)
	}
	bin, err := lookPath(s.Binary)
	if err != nil {
		return nil, fmt.Errorf("launching firecracker %s: %w", s.ID, err)
	}
	// Only an existing socket file can belong to a live Firecracker; the
	// /proc scan (a few ms) is skipped on the usual clean start.
	if _, err := os.Lstat(s.APISock); err == nil {
		if pid, err := FindByAPISocket(s.APISock); err != nil {
			return nil, fmt.Errorf("launching firecracker %s: %w", s.ID, err)
		} else if pid != 0 {
			return nil, fmt.Errorf("launching firecracker %s: process %d already serves api socket %s; stop it first", s.ID, pid, s.APISock)
		}
	}
	if err := removeStaleSocket(s.APISock); err != nil {
		return nil, fmt.Errorf("launching firecracker %s: %w", s.ID, err)
	}
	if s.LogPath != "" {
		if err := ensureFile(s.LogPath); err != nil {
			return nil, fmt.Errorf("launching firecracker %s: creating log %s: %w", s.ID, s.LogPath, err)
		}
	}
	stdin, err := os.Open(os.DevNull)
	if err != nil {
		return nil, fmt.Errorf("launching firecracker %s: %w", s.ID, err)
	}
	defer stdin.Close()
	consolePath := s.ConsolePath
	if consolePath == "" {
		consolePath = os.DevNull
	}
	console, err := os.OpenFile(consolePath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("launching firecracker %s: opening console log: %w", s.ID, err)
	}
	defer console.Close()

	argv := append([]string{bin}, Args(s)...)
	env := append(os.Environ(), s.Env...)
	p, err := w.Start(bin, argv, &os.ProcAttr{
		Env:   env,
		Files: []*os.File{stdin, console, console},
		Sys:   &syscall.SysProcAttr{Setsid: true},
	})
	if err != nil {
		return nil, fmt.Errorf("launching firecracker %s: starting %s: %w", s.ID, bin, err)
	}
	return p, nil
}

// lookPath resolves name like a shell would, without os/exec.
func lookPath(name string) (string, error) {
	if name == "" {
		return "", errors.New("firecracker binary is not set (firecracker_bin in the config)")
	}
	check := func(p string) error {
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		if fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
			return fmt.Errorf("%s is not an executable file", p)
		}
		return nil
	}
	if strings.Contains(name, "/") {
		if err := check(name); err != nil {
			return "", fmt.Errorf("firecracker binary %s: %w", name, err)
		}
		return name, nil
	}
	for _, dir := range filepath.SplitList(os.Getenv("PATH")) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, name)
		if check(p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("firecracker binary %q not found in PATH; set firecracker_bin to its full path", name)
}

func removeStaleSocket(p string) error {
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("checking stale api socket: %w", err)
	}
	if fi.IsDir() {
		return fmt.Errorf("api socket path %s is a directory; remove it", p)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing stale api socket: %w", err)
	}
	return nil
}

// ensureFile creates p (0600) when missing and leaves an existing file or FIFO
// alone (opening a FIFO for writing would block).
func ensureFile(p string) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return f.Close()
}

// WaitReady waits until the API socket exists and GET /machine-config
// succeeds, for at most timeout (0: only ctx bounds it). exited, when
// non-nil, is asked between attempts whether the process died; if it did,
// WaitReady fails at once with the detail exited returned (exit status and
// log lines, see Exited).
func WaitReady(ctx context.Context, c *Client, timeout time.Duration, exited func() (bool, string)) error {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	start := time.Now()
	delay := time.Millisecond
	var last error
	for {
		if exited != nil {
			if dead, why := exited(); dead {
				return fmt.Errorf("firecracker exited before its api socket %s was ready: %s", c.sock, why)
			}
		}
		if _, err := os.Stat(c.sock); err == nil {
			actx, cancel := context.WithTimeout(ctx, time.Second)
			_, err = c.GetMachineConfig(actx)
			cancel()
			if err == nil {
				return nil
			}
			// Keep the informative error, not the one the deadline cut
			// (an I/O deadline can pass before ctx says it is done).
			if !ended(ctx) || last == nil {
				last = err
			}
		} else {
			last = fmt.Errorf("api socket %s: %w", c.sock, err)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			if exited != nil {
				if dead, why := exited(); dead {
					return fmt.Errorf("firecracker exited before its api socket %s was ready: %s", c.sock, why)
				}
			}
			return fmt.Errorf("waiting for firecracker api socket %s: gave up after %s (last error: %v): %w",
				c.sock, time.Since(start).Round(time.Millisecond), last, ctx.Err())
		case <-t.C:
		}
		// Poll often: the wait is on the create path, and a stat is cheap.
		delay = min(2*delay, 5*time.Millisecond)
	}
}

// ended reports whether ctx is done or its deadline has passed: the timer
// that marks it done can run a moment after the deadline.
func ended(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}
