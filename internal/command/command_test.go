package command

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
)

func TestRunReportsCommandAndStderr(t *testing.T) {
	ctx := context.Background()
	out, err := Run(ctx, "sh", "-c", "echo out; echo oops >&2; exit 3")
	var ce *Error
	if !errors.As(err, &ce) || ExitCode(err) != 3 || string(out) != "out\n" {
		t.Fatalf("Run = %q, %v (exit %d)", out, err, ExitCode(err))
	}
	if err.Error() != "sh -c echo out; echo oops >&2; exit 3: oops" {
		t.Errorf("message %q", err)
	}
	if _, err := Run(ctx, "banger-no-such-tool"); !errors.Is(err, exec.ErrNotFound) || ExitCode(err) != -1 {
		t.Errorf("missing tool: %v (exit %d)", err, ExitCode(err))
	}
	if out, err := RunInput(ctx, "fed", "cat"); err != nil || string(out) != "fed" {
		t.Errorf("RunInput = %q, %v", out, err)
	}
	o, e, err := Output(ctx, "sh", "-c", "echo a; echo b >&2")
	if err != nil || string(o) != "a\n" || string(e) != "b\n" {
		t.Errorf("Output = %q %q %v", o, e, err)
	}
	if _, err := Combined(ctx, "sh", "-c", "echo on-stdout; exit 1"); err == nil || !strings.HasSuffix(err.Error(), ": on-stdout") {
		t.Errorf("Combined = %v", err)
	}
	if got := Trim(strings.Repeat("x", 3000) + "end \n"); len(got) != 2000 || !strings.HasSuffix(got, "end") {
		t.Errorf("Trim kept %d bytes", len(got))
	}
}
