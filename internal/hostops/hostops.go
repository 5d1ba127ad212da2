// Package hostops is banger's single privileged seam (DESIGN.md §1).
// External commands run through internal/command (Run here wraps it).
//
// The daemon calls privileged operations through a Client. When the daemon's
// euid is 0 the operation runs in-process; otherwise the Client re-executes
// `sudo -n <helper> internal <op>` with JSON arguments on stdin and reads a
// JSON reply on stdout. Both paths decode the same JSON and run the same
// validating handler, so there is one code path. Handlers never trust their
// arguments: paths must lie under the calling user's banger directories,
// interface and device names must carry banger's prefixes, and objects are
// handed over only to the calling user. A failure crosses the seam with its
// kind (errors.go): the caller gets the same *Error, errors.Is answers and
// message in both modes.
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
	"os/user"
	"path/filepath"
	"sort"
	"strconv"

	"banger/internal/command"
)

// DefaultHelperPath is the root-owned copy of the banger binary that the
// sudoers drop-in names.
const DefaultHelperPath = "/usr/local/libexec/banger/banger"

// SudoersPath is the drop-in `make install-helper` writes.
const SudoersPath = "/etc/sudoers.d/banger"

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

// reply is the helper's JSON answer on stdout: a result, or the kind and
// message of its failure.
type reply struct {
	Result  json.RawMessage `json:"result,omitempty"`
	Kind    string          `json:"kind,omitempty"`
	Message string          `json:"message,omitempty"`
	// Error and Refused are the failure as older banger builds wrote it;
	// still written for an older daemon, and read from an older helper.
	Error  string `json:"error,omitempty"`
	Refuse bool   `json:"refused,omitempty"`
}

func failure(err error) reply {
	k := KindOf(err)
	return reply{Kind: k, Message: err.Error(), Error: err.Error(), Refuse: k == KindRefused || k == KindInvalid}
}

// err turns a failed reply back into the *Error an in-process call gives.
func (r reply) err(op string) error {
	switch {
	case r.Kind != "":
		msg := r.Message
		if msg == "" {
			msg = r.Error
		}
		return &Error{Op: op, Kind: knownKind(r.Kind), Message: msg}
	case r.Error != "": // an older helper
		k := KindInternal
		if r.Refuse {
			k = KindRefused
		}
		return &Error{Op: op, Kind: k, Message: r.Error}
	}
	return nil
}

// call runs op with args and decodes its result into out (which may be nil).
// A failed op gives an *Error: the same kind, message and errors.Is
// answers in-process and through sudo.
func (c *Client) call(ctx context.Context, op string, args, out any) error {
	in, err := json.Marshal(args)
	if err != nil {
		return fmt.Errorf("encoding %s arguments: %w", op, err)
	}
	var res json.RawMessage
	if c.inProcess {
		res, err = dispatch(ctx, c.caller, op, in)
		if err != nil {
			return failure(err).err(op)
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
	stdout, stderr, runErr := command.Cmd{
		Name:  c.opts.Sudo,
		Args:  []string{"-n", c.opts.HelperPath, "internal", op},
		Stdin: bytes.NewReader(in),
	}.Run(ctx)
	if len(stdout) > 0 {
		var r reply
		if err := json.Unmarshal(stdout, &r); err != nil {
			return nil, fmt.Errorf("privileged op %s: unreadable helper reply %q: %w", op, trim(string(stdout)), err)
		}
		if err := r.err(op); err != nil {
			return nil, err
		}
		if runErr == nil {
			return r.Result, nil
		}
	}
	if runErr != nil {
		msg := trim(string(stderr))
		if msg == "" {
			msg = errors.Unwrap(runErr).Error() // as os/exec said it: exit status, not found
		}
		return nil, fmt.Errorf("privileged op %s needs root: `%s -n %s internal %s` failed: %s; install the helper and the sudoers drop-in %s with `sudo make install-helper`",
			op, c.opts.Sudo, c.opts.HelperPath, op, msg, SudoersPath)
	}
	return nil, fmt.Errorf("privileged op %s: the helper %s gave no reply; reinstall it with `sudo make install-helper`", op, c.opts.HelperPath)
}

// Serve is the body of `banger internal <op>`: it runs one operation as root
// for the user named by SUDO_UID (or root itself), reading JSON arguments
// from stdin and writing one JSON reply to stdout. It returns the process
// exit code: 0 done, 2 refused or invalid, 1 any other failure.
func Serve(ctx context.Context, op string, stdin io.Reader, stdout io.Writer) int {
	fail := func(err error) int {
		r := failure(err)
		_ = json.NewEncoder(stdout).Encode(r)
		return ExitCode(r.Kind)
	}
	if os.Geteuid() != 0 {
		return fail(fmt.Errorf("%w: banger internal must run as root (through sudo -n)", ErrRefused))
	}
	caller, err := callerFromEnv()
	if err != nil {
		return fail(err)
	}
	in, err := io.ReadAll(io.LimitReader(stdin, 1<<20))
	if err != nil {
		return fail(fmt.Errorf("reading arguments: %w", err))
	}
	res, err := dispatch(ctx, caller, op, in)
	if err != nil {
		return fail(err)
	}
	_ = json.NewEncoder(stdout).Encode(reply{Result: res})
	return 0
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
		return nil, fmt.Errorf("%w: unknown op %q", ErrInvalid, op)
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

// decode strictly decodes an op's arguments; a failure is ErrInvalid (the
// client names the op).
func decode(op string, in []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(in))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: bad arguments: %v", ErrInvalid, err)
	}
	return nil
}

// Run runs an external command as the current process and returns its
// stdout. A failure carries the command and its stderr (command.Run).
func Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	return command.Run(ctx, name, args...)
}

func trim(s string) string { return command.Trim(s) }
