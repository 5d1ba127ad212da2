package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// execServer serves the real handler on a unix socket and returns a dialer.
func execServer(t *testing.T, opts Options) func() net.Conn {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, l, Handler(opts)) }()
	t.Cleanup(func() { cancel(); <-done })
	return func() net.Conn {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
}

type execResult struct {
	code           int
	stdout, stderr []byte
}

func runExec(t *testing.T, dial func() net.Conn, req ExecRequest, stdin io.Reader) execResult {
	t.Helper()
	e, err := StartExec(dial(), req)
	if err != nil {
		t.Fatalf("StartExec(%q): %v", req.Argv, err)
	}
	defer e.Close()
	var out, errb bytes.Buffer
	code, err := e.Wait(stdin, &out, &errb)
	if err != nil {
		t.Fatalf("Wait(%q): %v", req.Argv, err)
	}
	return execResult{code, out.Bytes(), errb.Bytes()}
}

func TestExecExitCodes(t *testing.T) {
	dial := execServer(t, Options{})
	for _, tt := range []struct {
		script string
		want   int
	}{
		{"exit 0", 0},
		{"exit 1", 1},
		{"exit 3", 3},
		{"kill -9 $$", 137},
		{"kill -TERM $$", 143},
	} {
		r := runExec(t, dial, ExecRequest{Argv: []string{"sh", "-c", tt.script}, Workdir: t.TempDir()}, nil)
		if r.code != tt.want {
			t.Errorf("sh -c %q: exit %d, want %d", tt.script, r.code, tt.want)
		}
	}
}

func TestExecStdoutStderrSeparateAndBinary(t *testing.T) {
	dial := execServer(t, Options{})
	dir := t.TempDir()
	blob := make([]byte, 3<<20+17)
	if _, err := rand.Read(blob); err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(dir, "blob")
	if err := os.WriteFile(f, blob, 0o644); err != nil {
		t.Fatal(err)
	}
	r := runExec(t, dial, ExecRequest{Argv: []string{"sh", "-c", "cat blob; echo to-stderr >&2; exit 5"}, Workdir: dir}, nil)
	if r.code != 5 {
		t.Errorf("exit %d, want 5", r.code)
	}
	if !bytes.Equal(r.stdout, blob) {
		t.Errorf("stdout: %d bytes, differs from the %d-byte blob", len(r.stdout), len(blob))
	}
	if string(r.stderr) != "to-stderr\n" {
		t.Errorf("stderr = %q, want %q", r.stderr, "to-stderr\n")
	}
}

func TestExecStdinEOF(t *testing.T) {
	dial := execServer(t, Options{})
	in := bytes.Repeat([]byte("line\x00\xff\n"), 100000)
	r := runExec(t, dial, ExecRequest{Argv: []string{"cat"}, Stdin: true, Workdir: t.TempDir()}, bytes.NewReader(in))
	if r.code != 0 || !bytes.Equal(r.stdout, in) {
		t.Errorf("cat: exit %d, %d bytes out, want exit 0 and the %d bytes in", r.code, len(r.stdout), len(in))
	}
	// Without Stdin the command reads /dev/null.
	r = runExec(t, dial, ExecRequest{Argv: []string{"wc", "-c"}, Workdir: t.TempDir()}, nil)
	if strings.TrimSpace(string(r.stdout)) != "0" {
		t.Errorf("wc -c without stdin = %q, want 0", r.stdout)
	}
}

func TestExecEnvWorkdirAndDefaults(t *testing.T) {
	dial := execServer(t, Options{})
	dir := t.TempDir()
	r := runExec(t, dial, ExecRequest{Argv: []string{"sh", "-c", `echo "$FOO|$HOME|$(pwd)"`}, Env: []string{"FOO=bar baz"}, Workdir: dir}, nil)
	home := "/root"
	if u, err := lookupUser(""); err == nil {
		home = u.HomeDir
	}
	if got, want := string(r.stdout), "bar baz|"+home+"|"+dir+"\n"; got != want {
		t.Errorf("stdout = %q, want %q", got, want)
	}
}

func TestExecStartFailures(t *testing.T) {
	dial := execServer(t, Options{})
	dir := t.TempDir()
	noexec := filepath.Join(dir, "noexec")
	if err := os.WriteFile(noexec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		req  ExecRequest
		code int
		msg  string
	}{
		{ExecRequest{Argv: []string{"no-such-command-xyz"}, Workdir: dir}, 127, "command not found"},
		{ExecRequest{Argv: []string{"./missing"}, Workdir: dir}, 127, "no such file"},
		{ExecRequest{Argv: []string{noexec}, Workdir: dir}, 126, "cannot run"},
		{ExecRequest{Argv: []string{"true"}, Workdir: filepath.Join(dir, "nope")}, 125, "not a directory"},
		{ExecRequest{Argv: []string{"true"}, User: "no-such-user-xyz", Workdir: dir}, 125, "no user"},
		{ExecRequest{Workdir: dir}, 125, "needs a command"},
	} {
		_, err := StartExec(dial(), tt.req)
		var ee *ExecError
		if !errors.As(err, &ee) || ee.Code != tt.code || !strings.Contains(ee.Msg, tt.msg) {
			t.Errorf("StartExec(%q, workdir %s): %v, want ExecError %d containing %q", tt.req.Argv, tt.req.Workdir, err, tt.code, tt.msg)
		}
	}
}

func TestExecLegacyAgentRefuses(t *testing.T) {
	dial := execServer(t, Options{Legacy: true})
	_, err := StartExec(dial(), ExecRequest{Argv: []string{"true"}})
	if !errors.Is(err, ErrExecUnsupported) {
		t.Errorf("StartExec on a legacy agent: %v, want ErrExecUnsupported", err)
	}
}

func TestExecSignalReachesProcess(t *testing.T) {
	dial := execServer(t, Options{})
	e, err := StartExec(dial(), ExecRequest{Argv: []string{"sh", "-c", `trap 'echo got-int; exit 7' INT; echo ready; while :; do sleep 0.05; done`}, Workdir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	pr, pw := io.Pipe()
	type res struct {
		code int
		err  error
	}
	done := make(chan res, 1)
	go func() {
		c, err := e.Wait(nil, pw, io.Discard)
		pw.Close()
		done <- res{c, err}
	}()
	buf := make([]byte, 6)
	if _, err := io.ReadFull(pr, buf); err != nil || string(buf) != "ready\n" {
		t.Fatalf("reading ready: %q, %v", buf, err)
	}
	if err := e.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(pr)
	r := <-done
	if r.err != nil || r.code != 7 || !strings.Contains(string(rest), "got-int") {
		t.Errorf("after SIGINT: exit %d, err %v, output %q; want 7 and got-int", r.code, r.err, rest)
	}
}

func TestExecClientGoneKillsCommand(t *testing.T) {
	dial := execServer(t, Options{})
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pid")
	e, err := StartExec(dial(), ExecRequest{Argv: []string{"sh", "-c", `echo $$ > pid; exec sleep 60`}, Workdir: dir})
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	for i := 0; i < 200; i++ {
		if b, err := os.ReadFile(pidFile); err == nil && len(b) > 0 && b[len(b)-1] == '\n' {
			for _, c := range strings.TrimSpace(string(b)) {
				pid = pid*10 + int(c-'0')
			}
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if pid == 0 {
		t.Fatal("command did not write its pid")
	}
	e.Close()
	for i := 0; i < 300; i++ {
		if syscall.Kill(pid, 0) != nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("pid %d still runs 3s after the client closed the connection", pid)
}

func TestExecTTYAndResize(t *testing.T) {
	if _, err := os.Stat("/dev/ptmx"); err != nil {
		t.Skipf("no /dev/ptmx: %v", err)
	}
	dial := execServer(t, Options{})
	e, err := StartExec(dial(), ExecRequest{
		Argv: []string{"sh", "-c", `stty size; [ -t 0 ] && echo tty-yes; echo "$TERM"; read x; stty size; echo done`},
		TTY:  true, Stdin: true, Rows: 30, Cols: 100, Workdir: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	pr, pw := io.Pipe()
	stdinR, stdinW := io.Pipe()
	done := make(chan int, 1)
	go func() {
		c, err := e.Wait(stdinR, pw, io.Discard)
		if err != nil {
			t.Errorf("Wait: %v", err)
		}
		pw.Close()
		done <- c
	}()
	var out bytes.Buffer
	readUntil := func(s string) {
		t.Helper()
		buf := make([]byte, 256)
		for !strings.Contains(out.String(), s) {
			n, err := pr.Read(buf)
			out.Write(buf[:n])
			if err != nil {
				t.Fatalf("waiting for %q: %v; output %q", s, err, out.String())
			}
		}
	}
	readUntil("xterm-256color")
	if !strings.Contains(out.String(), "30 100") || !strings.Contains(out.String(), "tty-yes") {
		t.Errorf("first stty size: output %q, want 30 100 and tty-yes", out.String())
	}
	if err := e.Resize(40, 132); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // the resize frame goes before the line
	io.WriteString(stdinW, "go\r")
	readUntil("done")
	if !strings.Contains(out.String(), "40 132") {
		t.Errorf("after resize: output %q, want 40 132", out.String())
	}
	go io.Copy(io.Discard, pr) // whatever follows "done" (the line end)
	stdinW.Close()
	if c := <-done; c != 0 {
		t.Errorf("exit %d, want 0", c)
	}
}
