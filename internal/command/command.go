// Package command runs external programs for the rest of banger: one place
// that captures output, trims what a failure reports and exposes exit codes.
// Only the CLI's terminal-attached children (ssh, detaching bangerd) are
// started elsewhere, by internal/cli.
//
// Every failure is an *Error naming the program, its arguments and what it
// said. A caller that words its own message gets the cause as os/exec
// reported it (an exit status, a missing program) with errors.Unwrap.
//
// When ctx is done the program is killed; Run returns once it has exited
// and its output has been read (a child of the program that keeps the
// output open holds Run until it exits).
package command

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
)

// Error is a command that failed to start or exited non-zero.
type Error struct {
	Name string
	Args []string
	// Stderr is what the program said: its trimmed stderr (for Combined,
	// the trimmed stdout and stderr together; for Tail, the last lines of
	// both), empty when stderr went to a caller's writer.
	Stderr string
	Err    error // *exec.ExitError, exec.ErrNotFound, a context error, ...
}

func (e *Error) Error() string {
	msg := e.Stderr
	if msg == "" {
		msg = e.Err.Error()
	}
	return fmt.Sprintf("%s %s: %s", e.Name, strings.Join(e.Args, " "), msg)
}

func (e *Error) Unwrap() error { return e.Err }

// ExitCode is the exit status of the command behind err, or -1 when err
// is not a command that ran and exited (it failed to start, or a signal
// killed it).
func ExitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// ErrNotFound is the cause (errors.Is) when a program is not on PATH.
var ErrNotFound = exec.ErrNotFound

// LookPath finds a program on PATH as Run would (exec.LookPath).
func LookPath(file string) (string, error) { return exec.LookPath(file) }

// Cmd is one run of an external program with the options the one-line
// helpers (Run, Output, Combined) lack. A zero option keeps os/exec's
// default: no stdin, banger's environment, output captured.
type Cmd struct {
	Name string
	Args []string
	// Stdin feeds the program's standard input.
	Stdin io.Reader
	// Env is the program's whole environment; nil inherits banger's.
	Env []string
	// ExtraFiles become the program's descriptors 3, 4, ...: a tool handed
	// ExtraFiles[0] opens it as /dev/fd/3, never by a path.
	ExtraFiles []*os.File
	// Stdout and Stderr, when set, receive that output as it is written
	// instead of it being captured (Run returns nil for it). Setting both
	// to the same writer interleaves the two in order.
	Stdout, Stderr io.Writer
	// Combined captures stdout and stderr together, in the order written,
	// for tools that report problems on stdout (e2fsck, mkfs): Run returns
	// them as stdout.
	Combined bool
	// Tail, when positive, captures stdout and stderr together like
	// Combined but keeps only their last Tail lines, so a long build's
	// output is not held in memory: Run returns those lines (joined by
	// newlines) as stdout, and a failure reports them.
	Tail int
}

// Run runs the program and returns what it captured of stdout and stderr.
// A failure is an *Error.
func (c Cmd) Run(ctx context.Context) (stdout, stderr []byte, err error) {
	fail := func(msg string, err error) error {
		return &Error{Name: c.Name, Args: c.Args, Stderr: msg, Err: err}
	}
	joined := c.Combined || c.Tail > 0
	if joined && (c.Stdout != nil || c.Stderr != nil) {
		return nil, nil, fail("", errors.New("command: Combined or Tail with a Stdout or Stderr writer"))
	}
	cmd := exec.CommandContext(ctx, c.Name, c.Args...)
	cmd.Stdin, cmd.Env, cmd.ExtraFiles = c.Stdin, c.Env, c.ExtraFiles
	var outBuf, errBuf bytes.Buffer
	var tail *lineTail
	switch {
	case c.Tail > 0:
		tail = &lineTail{max: c.Tail}
		cmd.Stdout, cmd.Stderr = tail, tail
	case c.Combined:
		cmd.Stdout, cmd.Stderr = &outBuf, &outBuf
	default:
		cmd.Stdout, cmd.Stderr = c.Stdout, c.Stderr
		if c.Stdout == nil {
			cmd.Stdout = &outBuf
		}
		if c.Stderr == nil {
			cmd.Stderr = &errBuf
		}
	}
	runErr := cmd.Run()
	switch {
	case tail != nil:
		stdout = []byte(tail.String())
	case c.Stdout == nil:
		stdout = outBuf.Bytes()
	}
	if c.Stderr == nil && !joined {
		stderr = errBuf.Bytes()
	}
	if runErr != nil {
		msg := Trim(string(stderr))
		switch {
		case tail != nil:
			msg = string(stdout)
		case c.Combined:
			msg = Trim(string(stdout))
		}
		return stdout, stderr, fail(msg, runErr)
	}
	return stdout, stderr, nil
}

// Run runs name with args and returns its stdout. A failure is an *Error
// carrying the command and its stderr.
func Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	out, _, err := Cmd{Name: name, Args: args}.Run(ctx)
	return out, err
}

// RunInput is Run with stdin.
func RunInput(ctx context.Context, stdin string, name string, args ...string) ([]byte, error) {
	out, _, err := Cmd{Name: name, Args: args, Stdin: strings.NewReader(stdin)}.Run(ctx)
	return out, err
}

// Output runs name with args and returns stdout and stderr apart, for
// tools (debugfs) that report failed requests on stderr with exit 0.
func Output(ctx context.Context, name string, args ...string) (stdout, stderr []byte, err error) {
	return Cmd{Name: name, Args: args}.Run(ctx)
}

// OutputInput is Output with stdin.
func OutputInput(ctx context.Context, stdin string, name string, args ...string) (stdout, stderr []byte, err error) {
	return Cmd{Name: name, Args: args, Stdin: strings.NewReader(stdin)}.Run(ctx)
}

// Combined runs name with args for tools (e2fsck) that report problems
// on stdout: a failure's message is the trimmed stdout and stderr together.
func Combined(ctx context.Context, name string, args ...string) ([]byte, error) {
	out, _, err := Cmd{Name: name, Args: args, Combined: true}.Run(ctx)
	return out, err
}

// Trim strips space around s and keeps its last 2000 bytes.
func Trim(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 2000 {
		s = s[len(s)-2000:]
	}
	return s
}
