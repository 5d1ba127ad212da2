//go:build system

package test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// bangerIO runs the CLI in the namespace with stdin and returns stdout,
// stderr and the exit code.
func (e *env) bangerIO(stdin []byte, args ...string) ([]byte, string, int) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", e.ns, e.bins.banger}, args...)...)
	cmd.Env = e.environ()
	var out, errb bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(stdin), &out, &errb
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			e.t.Fatalf("running banger %v: %v", args, err)
		}
		code = ee.ExitCode()
	}
	return out.Bytes(), errb.String(), code
}

// TestVMExec: `vm exec` through fcfake's vsock, whose guest is the real
// agent handler running on the host: exit codes, separate binary-safe
// streams, stdin EOF with -i, banger's own failures as 125/127, idle
// detection's last use, and the refusal of an agent from before exec.
func TestVMExec(t *testing.T) {
	e := newEnv(t, "")
	e.registerImage()
	e.ok("vm", "create", "dev")
	before := e.vm("dev").LastUsedAt

	for _, tt := range []struct {
		script string
		code   int
	}{{"exit 0", 0}, {"exit 1", 1}, {"exit 3", 3}, {"kill -9 $$", 137}} {
		_, errOut, code := e.bangerIO(nil, "vm", "exec", "dev", "--", "sh", "-c", tt.script)
		if code != tt.code {
			t.Errorf("vm exec sh -c %q: exit %d, want %d (stderr %q)", tt.script, code, tt.code, errOut)
		}
	}
	if after := e.vm("dev").LastUsedAt; !after.After(before) {
		t.Errorf("last_used_at %v did not move past %v: vm exec must count as use", after, before)
	}

	out, errOut, code := e.bangerIO(nil, "vm", "exec", "dev", "--", "sh", "-c", `printf 'out\000\377'; echo err >&2; head -c 2097152 /dev/zero | tr '\0' 'x'`)
	if code != 0 || errOut != "err\n" || !bytes.HasPrefix(out, []byte("out\x00\xff")) || len(out) != 5+2<<20 {
		t.Errorf("streams: exit %d, stderr %q, stdout %d bytes starting %q; want 0, \"err\\n\", %d bytes", code, errOut, len(out), out[:min(len(out), 8)], 5+2<<20)
	}

	in := bytes.Repeat([]byte("abc\x00\n"), 50000)
	out, errOut, code = e.bangerIO(in, "vm", "exec", "-i", "dev", "--", "sh", "-c", "cat; echo eof-seen")
	if code != 0 || !bytes.Equal(out, append(append([]byte{}, in...), "eof-seen\n"...)) {
		t.Errorf("-i cat: exit %d, %d bytes out (stderr %q); want the %d bytes in then eof-seen", code, len(out), errOut, len(in))
	}

	out, _, _ = e.bangerIO(nil, "vm", "exec", "--env", "FOO=bar", "--workdir", "/tmp", "dev", "--", "sh", "-c", `echo "$FOO $(pwd) $(id -u)"`)
	if string(out) != "bar /tmp 0\n" {
		t.Errorf("env/workdir/user: %q, want %q", out, "bar /tmp 0\n")
	}

	for _, tt := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"dev", "--", "no-such-command-xyz"}, 127, "not found"},
		{[]string{"nope", "--", "true"}, 125, "nope"},
		{[]string{"dev"}, 125, "needs a command"},
		{[]string{"--bogus", "dev", "--", "true"}, 125, "unknown flag"},
	} {
		_, errOut, code := e.bangerIO(nil, append([]string{"vm", "exec"}, tt.args...)...)
		if code != tt.code || !strings.Contains(errOut, tt.msg) || strings.Count(strings.TrimSpace(errOut), "\n") > 0 {
			t.Errorf("vm exec %q: exit %d, stderr %q; want %d and one line containing %q", tt.args, code, errOut, tt.code, tt.msg)
		}
	}

	// -t under a pty (script gives banger one): the command sees a terminal.
	sc := exec.Command("ip", "netns", "exec", e.ns, "script", "-qec", e.bins.banger+` vm exec -t dev -- sh -c '[ -t 0 ] && [ -t 1 ] && echo tty-yes; stty size'`, "/dev/null")
	sc.Env = e.environ()
	if b, err := sc.CombinedOutput(); err != nil || !strings.Contains(string(b), "tty-yes") {
		t.Errorf("vm exec -t under script: %v, output %q; want tty-yes", err, b)
	}

	// SIGINT to banger reaches the guest process, whose exit code is banger's.
	ic := exec.Command("ip", "netns", "exec", e.ns, e.bins.banger, "vm", "exec", "dev", "--", "sh", "-c", `trap 'echo got-int; exit 7' INT; echo ready; while :; do sleep 0.05; done`)
	ic.Env = e.environ()
	pr, err := ic.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := ic.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 6)
	if _, err := io.ReadFull(pr, buf); err != nil || string(buf) != "ready\n" {
		t.Fatalf("waiting for ready: %q %v", buf, err)
	}
	ic.Process.Signal(syscall.SIGINT) // ip netns exec execs banger: this is banger's pid
	rest, _ := io.ReadAll(pr)
	ic.Wait()
	if ic.ProcessState.ExitCode() != 7 || !strings.Contains(string(rest), "got-int") {
		t.Errorf("after SIGINT: exit %d output %q; want 7 and got-int", ic.ProcessState.ExitCode(), rest)
	}

	e.ok("vm", "stop", "dev")
	_, errOut, code = e.bangerIO(nil, "vm", "exec", "dev", "--", "true")
	if code != 125 || !strings.Contains(errOut, "vm start dev") {
		t.Errorf("exec on a stopped vm: exit %d, stderr %q; want 125 naming `banger vm start dev`", code, errOut)
	}
	e.ok("daemon", "stop")

	e.extra = []string{"FCFAKE_AGENT_LEGACY=1"}
	e.ok("vm", "start", "dev")
	_, errOut, code = e.bangerIO(nil, "vm", "exec", "dev", "--", "true")
	if code != 125 || !strings.Contains(errOut, "older than this banger") || !strings.Contains(errOut, "banger image build") {
		t.Errorf("exec with a legacy agent: exit %d, stderr %q; want 125 and the rebuild hint", code, errOut)
	}
	e.ok("vm", "delete", "dev")
	e.assertClean()
}

// TestVMExecLargeOutput: 1 GiB of random bytes on stdout arrive whole and
// unchanged; the guest hashes what it wrote and says the sum on stderr.
func TestVMExecLargeOutput(t *testing.T) {
	const size = 1 << 30
	e := newEnv(t, "")
	e.registerImage()
	e.ok("vm", "create", "dev")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", e.ns, e.bins.banger, "vm", "exec", "dev", "--",
		"bash", "-c", `head -c 1073741824 /dev/urandom | tee >(sha256sum >&2); wait $!`)
	cmd.Env = e.environ()
	h := sha256.New()
	n := &countWriter{}
	var errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.MultiWriter(h, n), &errb
	t0 := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("vm exec of 1 GiB: %v (stderr %q)", err, errb.String())
	}
	took := time.Since(t0)
	got := hex.EncodeToString(h.Sum(nil))
	want, _, _ := strings.Cut(strings.TrimSpace(errb.String()), " ")
	t.Logf("1 GiB through vm exec in %s (%.0f MiB/s)", took.Round(time.Millisecond), float64(n.n)/(1<<20)/took.Seconds())
	if n.n != size || got != want {
		t.Fatalf("stdout: %d bytes with sha256 %s; the guest wrote %d bytes with sha256 %q", n.n, got, size, want)
	}
	e.ok("vm", "delete", "dev")
	e.assertClean()
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}

// BenchmarkVMExecTrue times `banger vm exec VM -- true` as a whole process
// against fcfake. The CLI runs in the host's namespaces, as a user's does:
// it only talks to unix sockets (the daemon's and the VM's vsock), so the
// test's network namespace, which `ip netns exec` enters at a cost of
// several milliseconds of its own, is not needed for it. The netns-exec
// side is reported too, for comparison.
// Run: go test -tags system -run '^$' -bench VMExecTrue -benchtime 20x ./test/
func BenchmarkVMExecTrue(b *testing.B) {
	e := newEnv(b, "")
	e.registerImage()
	e.ok("vm", "create", "dev")
	b.Run("host", func(b *testing.B) {
		timeRuns(b, e.daemonPID(), func() *exec.Cmd {
			cmd := exec.Command(e.bins.banger, "vm", "exec", "dev", "--", "true")
			cmd.Env = e.environ()
			return cmd
		})
	})
	b.Run("netns-exec", func(b *testing.B) {
		timeRuns(b, e.daemonPID(), func() *exec.Cmd {
			cmd := exec.Command("ip", "netns", "exec", e.ns, e.bins.banger, "vm", "exec", "dev", "--", "true")
			cmd.Env = e.environ()
			return cmd
		})
	})
	b.StopTimer()
	e.ok("vm", "delete", "dev")
	e.assertClean()
}
