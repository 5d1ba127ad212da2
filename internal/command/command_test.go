package command

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
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

func TestCmdExtraFilesAreDescriptorThree(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// The program sees only the descriptor, never the path.
	_, _, err = Cmd{Name: "sh", Args: []string{"-c", "echo through-fd3 >/dev/fd/3"}, ExtraFiles: []*os.File{f}}.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(f.Name())
	if err != nil || string(got) != "through-fd3\n" {
		t.Errorf("file holds %q, %v; want what the program wrote to /dev/fd/3", got, err)
	}
}

func TestCmdEnvReplacesTheEnvironment(t *testing.T) {
	t.Setenv("BANGER_COMMAND_INHERITED", "leaked")
	out, _, err := Cmd{Name: "sh", Args: []string{"-c", `echo "$BANGER_X:${BANGER_COMMAND_INHERITED-unset}"`}, Env: []string{"BANGER_X=set"}}.Run(context.Background())
	if err != nil || string(out) != "set:unset\n" {
		t.Errorf("with Env = %q, %v; want set:unset", out, err)
	}
	out, _, err = Cmd{Name: "sh", Args: []string{"-c", `echo "${BANGER_COMMAND_INHERITED-unset}"`}}.Run(context.Background())
	if err != nil || string(out) != "leaked\n" {
		t.Errorf("nil Env = %q, %v; want the inherited value", out, err)
	}
}

func TestCmdTailReportsTheLastLinesOnFailure(t *testing.T) {
	script := `i=1; while [ $i -le 500 ]; do echo "line $i"; i=$((i+1)); done; echo "E: broke" >&2; exit 4`
	out, _, err := Cmd{Name: "sh", Args: []string{"-c", script}, Tail: 3}.Run(context.Background())
	var ce *Error
	if !errors.As(err, &ce) || ExitCode(err) != 4 {
		t.Fatalf("Run = %v (exit %d), want an *Error with exit 4", err, ExitCode(err))
	}
	want := "line 499\nline 500\nE: broke"
	if string(out) != want || ce.Stderr != want {
		t.Errorf("tail = %q, error reports %q; want %q", out, ce.Stderr, want)
	}
	if cause := errors.Unwrap(err); cause == nil || cause.Error() != "exit status 4" {
		t.Errorf("cause = %v, want exit status 4", cause)
	}
	if !strings.HasPrefix(err.Error(), "sh -c ") || !strings.HasSuffix(err.Error(), ": "+want) {
		t.Errorf("message %q", err)
	}
}

// oldTail is how hostops cut a build's output before the tail moved here.
func oldTail(s string, n int) string {
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

func TestLineTailSplitsLikeScanLines(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	pieces := []string{"a", "bc", "\n", "\r\n", "\n\n", "dé", " ", "\r"}
	for round := 0; round < 500; round++ {
		var sb strings.Builder
		for i := rng.IntN(40); i > 0; i-- {
			sb.WriteString(pieces[rng.IntN(len(pieces))])
		}
		s, n := sb.String(), 1+rng.IntN(5)
		lt := &lineTail{max: n}
		for rest := s; rest != ""; {
			k := 1 + rng.IntN(len(rest))
			lt.Write([]byte(rest[:k]))
			rest = rest[k:]
		}
		if got, want := lt.String(), oldTail(s, n); got != want {
			t.Fatalf("tail %d of %q = %q, want %q", n, s, got, want)
		}
	}
	lt := &lineTail{max: 2}
	lt.Write([]byte(strings.Repeat("x", 3*maxTailLine) + "end\nnext"))
	if got := lt.String(); len(got) != maxTailLine+len("\nnext") || !strings.HasSuffix(got, "end\nnext") {
		t.Errorf("a long line kept %d bytes", len(got))
	}
}

func TestCmdStreamsToWriters(t *testing.T) {
	var both bytes.Buffer
	out, errOut, err := Cmd{Name: "sh", Args: []string{"-c", "echo one; echo two >&2; echo three"}, Stdout: &both, Stderr: &both}.Run(context.Background())
	if err != nil || out != nil || errOut != nil || both.String() != "one\ntwo\nthree\n" {
		t.Errorf("streamed %q (captured %q %q), %v", both.String(), out, errOut, err)
	}
	var so bytes.Buffer
	out, errOut, err = Cmd{Name: "sh", Args: []string{"-c", "echo o; echo e >&2; exit 1"}, Stdout: &so}.Run(context.Background())
	var ce *Error
	if !errors.As(err, &ce) || so.String() != "o\n" || out != nil || string(errOut) != "e\n" || ce.Stderr != "e" {
		t.Errorf("stdout streamed %q, captured %q %q, %v", so.String(), out, errOut, err)
	}
	if _, _, err := (Cmd{Name: "true", Combined: true, Stdout: &so}).Run(context.Background()); err == nil {
		t.Error("Combined with a Stdout writer ran")
	}
}

func TestCmdContextCancelKillsTheProgram(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for {
			if b, err := os.ReadFile(pidFile); err == nil && strings.HasSuffix(string(b), "\n") {
				cancel()
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	// exec keeps the pid: the shell that wrote it becomes sleep.
	_, _, err := Cmd{Name: "sh", Args: []string{"-c", `echo $$ >` + pidFile + `; exec sleep 300`}}.Run(ctx)
	if err == nil || ExitCode(err) != -1 || ctx.Err() == nil {
		t.Fatalf("Run = %v (exit %d), want killed by the cancelled context", err, ExitCode(err))
	}
	b, rerr := os.ReadFile(pidFile)
	if rerr != nil {
		t.Fatal(rerr)
	}
	pid, perr := strconv.Atoi(strings.TrimSpace(string(b)))
	if perr != nil {
		t.Fatal(perr)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("process %d after Run returned: kill(0) = %v, want ESRCH (gone)", pid, err)
	}
}

func TestLookPath(t *testing.T) {
	if p, err := LookPath("sh"); err != nil || !filepath.IsAbs(p) {
		t.Errorf("LookPath(sh) = %q, %v", p, err)
	}
	if _, err := LookPath("banger-no-such-tool"); !errors.Is(err, ErrNotFound) {
		t.Errorf("LookPath of a missing tool = %v, want ErrNotFound", err)
	}
}
