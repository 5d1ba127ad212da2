// Package hostops is banger's single privileged seam (DESIGN.md §1) and the
// one place that runs external commands.
//
// The daemon calls privileged operations through a Client. When the daemon's
// euid is 0 the operation runs in-process; otherwise the Client re-executes
// `sudo -n <helper> internal <op>` with JSON arguments on stdin and reads a
// JSON reply on stdout. Both paths decode the same JSON and run the same
// validating handler, so there is one code path. Handlers never trust their
// arguments: paths must lie under the calling user's banger directories,
// interface and device names must carry banger's prefixes, and objects are
// handed over only to the calling user.
package hostops

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// DefaultHelperPath is the root-owned copy of the banger binary that the
// sudoers drop-in names.
const DefaultHelperPath = "/usr/local/libexec/banger/banger"

// SudoersPath is the drop-in `make install-helper` writes.
const SudoersPath = "/etc/sudoers.d/banger"

// ErrRefused marks an operation refused because its arguments break the rules.
var ErrRefused = errors.New("refused")

// Caller is who a privileged operation runs for: the user that owns the
// result and the directories paths must lie under. Ops reach those
// directories only through Caller.files (callerfs.go): each root opened
// once without following symlinks, every path resolved beneath it.
type Caller struct {
	UID   int      `json:"uid"`
	GID   int      `json:"gid"`
	Roots []string `json:"roots"`
}

// Options configure a Client.
type Options struct {
	// Roots are the caller's banger directories (state and data). Used for
	// in-process calls; a sudo helper derives them from SUDO_UID instead.
	Roots []string
	// HelperPath is the sudo target (default DefaultHelperPath).
	HelperPath string
	// Sudo is the sudo binary (default "sudo").
	Sudo string
	// ForceSudo makes a root daemon still go through sudo (tests).
	ForceSudo bool
	Logger    *slog.Logger
}

// Client runs privileged operations for the daemon.
type Client struct {
	opts      Options
	inProcess bool
	caller    Caller
	log       *slog.Logger
}

// New returns a Client for the current process.
func New(opts Options) *Client {
	if opts.HelperPath == "" {
		opts.HelperPath = DefaultHelperPath
	}
	if opts.Sudo == "" {
		opts.Sudo = "sudo"
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	roots := make([]string, 0, len(opts.Roots))
	for _, r := range opts.Roots {
		roots = append(roots, filepath.Clean(r))
	}
	return &Client{
		opts:      opts,
		inProcess: os.Geteuid() == 0 && !opts.ForceSudo,
		caller:    Caller{UID: os.Getuid(), GID: os.Getgid(), Roots: roots},
		log:       log,
	}
}

// Mode says how privileged operations run: "in-process" or "sudo".
func (c *Client) Mode() string {
	if c.inProcess {
		return "in-process"
	}
	return "sudo"
}

// reply is the helper's JSON answer on stdout.
type reply struct {
	Result json.RawMessage `json:"result,omitempty"`
	Error  string          `json:"error,omitempty"`
	Refuse bool            `json:"refused,omitempty"`
}

// call runs op with args and decodes its result into out (which may be nil).
func (c *Client) call(ctx context.Context, op string, args, out any) error {
	in, err := json.Marshal(args)
	if err != nil {
		return fmt.Errorf("encoding %s arguments: %w", op, err)
	}
	var res json.RawMessage
	if c.inProcess {
		res, err = dispatch(ctx, c.caller, op, in)
		if err != nil {
			return err
		}
	} else {
		res, err = c.viaSudo(ctx, op, in)
		if err != nil {
			return err
		}
	}
	if out == nil || len(res) == 0 {
		return nil
	}
	if err := json.Unmarshal(res, out); err != nil {
		return fmt.Errorf("decoding %s result: %w", op, err)
	}
	return nil
}

func (c *Client) viaSudo(ctx context.Context, op string, in []byte) (json.RawMessage, error) {
	cmd := exec.CommandContext(ctx, c.opts.Sudo, "-n", c.opts.HelperPath, "internal", op)
	cmd.Stdin = bytes.NewReader(in)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	runErr := cmd.Run()
	var r reply
	if stdout.Len() > 0 {
		if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("privileged op %s: unreadable helper reply %q: %w", op, trim(stdout.String()), err)
		}
		if r.Error != "" {
			if r.Refuse {
				return nil, fmt.Errorf("privileged op %s: %w: %s", op, ErrRefused, r.Error)
			}
			return nil, fmt.Errorf("privileged op %s: %s", op, r.Error)
		}
		if runErr == nil {
			return r.Result, nil
		}
	}
	if runErr != nil {
		msg := trim(stderr.String())
		if msg == "" {
			msg = runErr.Error()
		}
		return nil, fmt.Errorf("privileged op %s needs root: `%s -n %s internal %s` failed: %s; install the helper and the sudoers drop-in %s with `sudo make install-helper`",
			op, c.opts.Sudo, c.opts.HelperPath, op, msg, SudoersPath)
	}
	return r.Result, nil
}

// Serve is the body of `banger internal <op>`: it runs one operation as root
// for the user named by SUDO_UID (or root itself), reading JSON arguments
// from stdin and writing one JSON reply to stdout. It returns the process
// exit code.
func Serve(ctx context.Context, op string, stdin io.Reader, stdout io.Writer) int {
	write := func(r reply) int {
		_ = json.NewEncoder(stdout).Encode(r)
		if r.Error != "" {
			return 1
		}
		return 0
	}
	if os.Geteuid() != 0 {
		return write(reply{Error: "banger internal must run as root (through sudo -n)"})
	}
	caller, err := callerFromEnv()
	if err != nil {
		return write(reply{Error: err.Error(), Refuse: true})
	}
	in, err := io.ReadAll(io.LimitReader(stdin, 1<<20))
	if err != nil {
		return write(reply{Error: "reading arguments: " + err.Error()})
	}
	res, err := dispatch(ctx, caller, op, in)
	if err != nil {
		return write(reply{Error: err.Error(), Refuse: errors.Is(err, ErrRefused)})
	}
	return write(reply{Result: res})
}

// callerFromEnv derives the calling user from sudo's SUDO_UID/SUDO_GID and
// that user's home directory; the environment cannot widen the roots.
func callerFromEnv() (Caller, error) {
	uid, gid := 0, 0
	if s := os.Getenv("SUDO_UID"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 0 {
			return Caller{}, fmt.Errorf("%w: bad SUDO_UID %q", ErrRefused, s)
		}
		uid = v
		gid = v
		if g := os.Getenv("SUDO_GID"); g != "" {
			if gv, err := strconv.Atoi(g); err == nil && gv >= 0 {
				gid = gv
			}
		}
	}
	u, err := user.LookupId(strconv.Itoa(uid))
	if err != nil {
		return Caller{}, fmt.Errorf("%w: looking up uid %d: %v", ErrRefused, uid, err)
	}
	if u.HomeDir == "" || u.HomeDir == "/" || !filepath.IsAbs(u.HomeDir) {
		return Caller{}, fmt.Errorf("%w: user %s has no usable home directory (%q)", ErrRefused, u.Username, u.HomeDir)
	}
	return Caller{UID: uid, GID: gid, Roots: UserRoots(u.HomeDir)}, nil
}

// UserRoots are the banger directories of a user with the given home, the
// only places a sudo helper touches on that user's behalf. Each must be a
// real directory the user owns, reached from "/" through no symlink (the
// home's own path included).
func UserRoots(home string) []string {
	return []string{
		filepath.Join(home, ".local", "state", "banger"),
		filepath.Join(home, ".local", "share", "banger"),
	}
}

// opFunc runs one decoded operation.
type opFunc func(ctx context.Context, c Caller, args json.RawMessage) (any, error)

// registry lists every operation. Each file adding operations contributes
// through its own add function.
func registry() map[string]opFunc {
	m := map[string]opFunc{}
	addBaseOps(m)
	addNetOps(m)
	addStorageOps(m)
	addImageOps(m)
	addResolverOps(m)
	return m
}

// OpNames lists the registered operation names, sorted.
func OpNames() []string {
	var names []string
	for n := range registry() {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func dispatch(ctx context.Context, c Caller, op string, in []byte) (json.RawMessage, error) {
	fn, ok := registry()[op]
	if !ok {
		return nil, fmt.Errorf("%w: unknown privileged op %q", ErrRefused, op)
	}
	res, err := fn(ctx, c, in)
	if err != nil {
		return nil, err
	}
	if res == nil {
		return nil, nil
	}
	out, err := json.Marshal(res)
	if err != nil {
		return nil, fmt.Errorf("encoding %s result: %w", op, err)
	}
	return out, nil
}

// decode strictly decodes an op's arguments.
func decode(op string, in []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(in))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %s: bad arguments: %v", ErrRefused, op, err)
	}
	return nil
}

// Run runs an external command as the current process and returns its
// stdout. A failure carries the command and its stderr.
func Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		msg := trim(stderr.String())
		if msg == "" {
			msg = err.Error()
		}
		return stdout.Bytes(), fmt.Errorf("%s %s: %s", name, strings.Join(args, " "), msg)
	}
	return stdout.Bytes(), nil
}

func trim(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 2000 {
		s = s[len(s)-2000:]
	}
	return s
}
