// Package command runs external programs for the rest of banger: one place
// that captures output, trims what a failure reports and exposes exit codes.
package command

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
)

// Error is a command that failed to start or exited non-zero.
type Error struct {
	Name   string
	Args   []string
	Stderr string // trimmed
	Err    error  // *exec.ExitError, exec.ErrNotFound, a context error, ...
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
// is not a command that ran and exited.
func ExitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// Run runs name with args and returns its stdout. A failure is an *Error
// carrying the command and its stderr.
func Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	return run(ctx, nil, name, args...)
}

// RunInput is Run with stdin.
func RunInput(ctx context.Context, stdin string, name string, args ...string) ([]byte, error) {
	return run(ctx, strings.NewReader(stdin), name, args...)
}

// Output runs name with args and returns stdout and stderr apart, for
// tools (debugfs) that report failed requests on stderr with exit 0.
func Output(ctx context.Context, name string, args ...string) (stdout, stderr []byte, err error) {
	return output(ctx, nil, name, args...)
}

// OutputInput is Output with stdin.
func OutputInput(ctx context.Context, stdin string, name string, args ...string) (stdout, stderr []byte, err error) {
	return output(ctx, strings.NewReader(stdin), name, args...)
}

// Combined runs name with args for tools (e2fsck) that report problems
// on stdout: a failure's message is the trimmed stdout and stderr together.
func Combined(ctx context.Context, name string, args ...string) ([]byte, error) {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return out, &Error{Name: name, Args: args, Stderr: Trim(string(out)), Err: err}
	}
	return out, nil
}

func run(ctx context.Context, stdin io.Reader, name string, args ...string) ([]byte, error) {
	out, _, err := output(ctx, stdin, name, args...)
	return out, err
}

func output(ctx context.Context, stdin io.Reader, name string, args ...string) ([]byte, []byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), stderr.Bytes(), &Error{Name: name, Args: args, Stderr: Trim(stderr.String()), Err: err}
	}
	return stdout.Bytes(), stderr.Bytes(), nil
}

// Trim strips space around s and keeps its last 2000 bytes.
func Trim(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 2000 {
		s = s[len(s)-2000:]
	}
	return s
}
