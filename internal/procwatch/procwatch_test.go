package procwatch

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// pidnsHelperEnv makes the test binary run pidReuseMain: as pid 1 of a new
// pid namespace it can choose which pid the next process gets.
const pidnsHelperEnv = "PROCWATCH_PIDNS_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(pidnsHelperEnv) == "1" {
		os.Exit(pidReuseMain())
	}
	os.Exit(m.Run())
}

func newWatcher(t *testing.T) *Watcher {
	t.Helper()
	w, err := New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

func devNull(t *testing.T) *os.File {
	t.Helper()
	f, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func start(t *testing.T, w *Watcher, argv ...string) *Proc {
	t.Helper()
	null := devNull(t)
	p, err := w.Start(argv[0], argv, &os.ProcAttr{Files: []*os.File{null, null, null}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Kill() })
	return p
}

func waitDone(t *testing.T, p *Proc) Status {
	t.Helper()
	select {
	case <-p.Done():
		return p.Status()
	case <-time.After(10 * time.Second):
		t.Fatalf("pid %d: exit not noticed", p.Pid())
		return Status{}
	}
}

// reaped reports whether pid is no child of ours any more, dead or alive.
func reaped(pid int) bool {
	var info unix.Siginfo
	err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
	return errors.Is(err, unix.ECHILD)
}

func TestStartReapsWithStatus(t *testing.T) {
	w := newWatcher(t)
	for _, tt := range []struct {
		script string
		want   string
		clean  bool
	}{
		{"exit 0", "exit status 0", true},
		{"exit 3", "exit status 3", false},
		{"kill -TERM $$", "killed by signal SIGTERM", false},
	} {
		p := start(t, w, "/bin/sh", "-c", tt.script)
		if !p.Child() {
			t.Fatal("a started process is not a child")
		}
		st := waitDone(t, p)
		if st.String() != tt.want || !st.Known || st.Clean() != tt.clean {
			t.Errorf("%q: status %+v (%s), want %s", tt.script, st, st, tt.want)
		}
		if !reaped(p.Pid()) {
			t.Errorf("%q: pid %d left a zombie", tt.script, p.Pid())
		}
	}
	if w.Len() != 0 {
		t.Errorf("%d processes still watched after all exited", w.Len())
	}
}

func TestSignalThroughPidfd(t *testing.T) {
	w := newWatcher(t)
	p := start(t, w, "/bin/sleep", "60")
	if err := p.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
		t.Fatal("SIGSTOP counted as an exit")
	case <-time.After(100 * time.Millisecond):
	}
	if err := p.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if st := waitDone(t, p); st.Signal != syscall.SIGKILL {
		t.Errorf("status %s, want killed by SIGKILL", st)
	}
	if err := p.Signal(syscall.SIGKILL); !errors.Is(err, ErrGone) {
		t.Errorf("signal after exit: %v, want ErrGone", err)
	}
}

func TestNotify(t *testing.T) {
	w := newWatcher(t)
	p := start(t, w, "/bin/sh", "-c", "sleep 0.1")
	var calls atomic.Int32
	got := make(chan *Proc, 2)
	p.Notify(func(q *Proc) { calls.Add(1); got <- q })
	if q := <-got; q != p || !q.Exited() {
		t.Fatalf("notified with %v, exited %v", q, q.Exited())
	}
	// After the exit, Notify calls at once.
	p.Notify(func(q *Proc) { calls.Add(1); got <- q })
	select {
	case <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("Notify after the exit was not called")
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("%d calls, want 2", n)
	}
}

func TestRelease(t *testing.T) {
	w := newWatcher(t)
	p := start(t, w, "/bin/sleep", "60")
	called := make(chan struct{}, 1)
	p.Notify(func(*Proc) { called <- struct{}{} })
	p.Release()
	if w.Len() != 0 {
		t.Errorf("%d watched after Release", w.Len())
	}
	if err := p.Kill(); !errors.Is(err, ErrReleased) {
		t.Errorf("Kill after Release: %v, want ErrReleased", err)
	}
	if err := syscall.Kill(p.Pid(), 0); err != nil {
		t.Fatalf("released process is gone: %v", err)
	}
	// Adopt takes it back: our child, so it can be reaped again.
	q, err := w.Adopt(p.Pid(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !q.Child() {
		t.Error("re-adopted child not seen as a child")
	}
	q.Kill()
	if st := waitDone(t, q); st.Signal != syscall.SIGKILL {
		t.Errorf("status %s", st)
	}
	select {
	case <-called:
		t.Error("a released Proc's Notify was called")
	case <-time.After(50 * time.Millisecond):
	}
}

func TestAdoptVerify(t *testing.T) {
	w := newWatcher(t)
	p := start(t, w, "/bin/sleep", "60")
	want := errors.New("not the expected process")
	if _, err := w.Adopt(p.Pid(), func() error { return want }); !errors.Is(err, want) {
		t.Errorf("Adopt with a failing check: %v", err)
	}
	if w.Len() != 1 {
		t.Errorf("%d watched, want 1 (the refused adoption must not count)", w.Len())
	}
	if _, err := w.Adopt(0, nil); !errors.Is(err, ErrGone) {
		t.Errorf("Adopt(0): %v", err)
	}
}

func TestCloseWaitsForCallbacksAndReleases(t *testing.T) {
	w, err := New()
	if err != nil {
		t.Fatal(err)
	}
	short := start(t, w, "/bin/true")
	long := start(t, w, "/bin/sleep", "60")
	var finished atomic.Bool
	short.Notify(func(*Proc) { time.Sleep(100 * time.Millisecond); finished.Store(true) })
	waitDone(t, short)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if !finished.Load() {
		t.Error("Close returned before a Notify call finished")
	}
	if err := long.Kill(); !errors.Is(err, ErrReleased) {
		t.Errorf("Kill after Close: %v, want ErrReleased", err)
	}
	syscall.Kill(long.Pid(), syscall.SIGKILL)
	var ws syscall.WaitStatus
	syscall.Wait4(long.Pid(), &ws, 0, nil)
	if _, err := w.Adopt(os.Getpid(), nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Adopt after Close: %v, want ErrClosed", err)
	}
}

// threads is the Threads: line of /proc/self/status.
func threads(t testing.TB) int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Threads:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no Threads: line")
	return 0
}

// TestThreadsFlatWithManyProcesses watches 200 processes: the thread count
// must not grow with them (os.Process.Wait would hold one thread each).
func TestThreadsFlatWithManyProcesses(t *testing.T) {
	const n = 200
	w := newWatcher(t)
	before := threads(t)
	procs := make([]*Proc, n)
	for i := range procs {
		procs[i] = start(t, w, "/bin/sleep", "600")
	}
	time.Sleep(200 * time.Millisecond) // let any thread the runtime would add appear
	during := threads(t)
	if w.Len() != n {
		t.Fatalf("%d watched, want %d", w.Len(), n)
	}
	for _, p := range procs {
		if err := p.Kill(); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range procs {
		waitDone(t, p)
	}
	after := threads(t)
	t.Logf("threads: %d before, %d with %d processes watched, %d after they exited", before, during, n, after)
	if during >= 20 {
		t.Errorf("%d threads with %d watched processes, want fewer than 20", during, n)
	}
	for _, p := range procs {
		if !reaped(p.Pid()) {
			t.Fatalf("pid %d not reaped", p.Pid())
		}
	}
	if w.Len() != 0 {
		t.Errorf("%d still watched", w.Len())
	}
}

// BenchmarkThreads reports the threads of this process with 100 and 500
// watched processes, next to one os.Process.Wait goroutine per process.
func BenchmarkThreads(b *testing.B) {
	// The Go runtime keeps threads it made, so the os.Process.Wait runs
	// come last.
	for _, how := range []string{"procwatch", "os.Process.Wait"} {
		for _, n := range []int{100, 500} {
			b.Run(fmt.Sprintf("%s/%d", how, n), func(b *testing.B) {
				for range b.N {
					b.ReportMetric(float64(threadsWith(b, n, how == "procwatch")), "threads")
				}
			})
		}
	}
}

func threadsWith(b *testing.B, n int, pidfds bool) int {
	null, _ := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	defer null.Close()
	attr := &os.ProcAttr{Files: []*os.File{null, null, null}}
	w, err := New()
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	var kill []func()
	done := make(chan struct{}, n)
	for range n {
		if pidfds {
			p, err := w.Start("/bin/sleep", []string{"sleep", "600"}, attr)
			if err != nil {
				b.Fatal(err)
			}
			p.Notify(func(*Proc) { done <- struct{}{} })
			kill = append(kill, func() { p.Kill() })
			continue
		}
		p, err := os.StartProcess("/bin/sleep", []string{"sleep", "600"}, attr)
		if err != nil {
			b.Fatal(err)
		}
		go func() { p.Wait(); done <- struct{}{} }()
		kill = append(kill, func() { p.Kill() })
	}
	time.Sleep(300 * time.Millisecond)
	th := threads(b)
	for _, k := range kill {
		k()
	}
	for range n {
		<-done
	}
	return th
}

// TestPidReuseNeverSignalled reuses the pid of a watched process that
// exited, for a child and for an adopted non-child, inside a private pid
// namespace where the next pid can be chosen (ns_last_pid): signalling the
// old Proc must fail with ErrGone and leave the new process alive.
func TestPidReuseNeverSignalled(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: makes a pid namespace and writes ns_last_pid")
	}
	if _, err := os.Stat("/proc/sys/kernel/ns_last_pid"); err != nil {
		t.Skipf("kernel has no ns_last_pid (CONFIG_CHECKPOINT_RESTORE): %v", err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	r, wr, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	null := devNull(t)
	p, err := os.StartProcess(exe, []string{exe, "-test.run=^$"}, &os.ProcAttr{
		Env:   append(os.Environ(), pidnsHelperEnv+"=1"),
		Files: []*os.File{null, wr, wr},
		Sys:   &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID},
	})
	wr.Close()
	if err != nil {
		r.Close()
		t.Skipf("cannot make a pid namespace: %v", err)
	}
	var out []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	r.Close()
	st, _ := p.Wait()
	text := strings.Join(out, "\n")
	t.Logf("helper in the pid namespace:\n%s", text)
	if !st.Success() || !strings.Contains(text, "child: reused pid") || !strings.Contains(text, "adopted: reused pid") {
		t.Fatalf("helper failed (%s)", st)
	}
}

// pidReuseMain runs as pid 1 of a fresh pid namespace.
func pidReuseMain() int {
	fail := func(format string, a ...any) int {
		fmt.Printf("FAIL: "+format+"\n", a...)
		return 1
	}
	w, err := New()
	if err != nil {
		return fail("%v", err)
	}
	null, _ := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	attr := &os.ProcAttr{Files: []*os.File{null, null, null}}

	// reuse starts a plain `sleep` under pid, once that pid is free.
	reuse := func(pid int) (*os.Process, error) {
		for range 200 {
			if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		// A thread the Go runtime starts meanwhile can take the pid first:
		// try a few times.
		var got []int
		for range 20 {
			if err := os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(strconv.Itoa(pid-1)), 0); err != nil {
				return nil, err
			}
			d, err := os.StartProcess("/bin/sleep", []string{"sleep", "60"}, attr)
			if err != nil {
				return nil, err
			}
			if d.Pid == pid {
				return d, nil
			}
			got = append(got, d.Pid)
			d.Kill()
			d.Wait()
		}
		return nil, fmt.Errorf("the new processes got pids %v, never %d", got, pid)
	}
	check := func(what string, old *Proc) int {
		<-old.Done()
		decoy, err := reuse(old.Pid())
		if err != nil {
			return fail("%s: %v", what, err)
		}
		defer func() { decoy.Kill(); decoy.Wait() }()
		if err := old.Kill(); !errors.Is(err, ErrGone) {
			return fail("%s: Kill of the exited process: %v, want ErrGone", what, err)
		}
		time.Sleep(50 * time.Millisecond)
		var info unix.Siginfo
		if err := unix.Waitid(unix.P_PID, decoy.Pid, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil); err != nil {
			return fail("%s: waitid on the new process: %v", what, err)
		}
		if err := syscall.Kill(decoy.Pid, 0); err != nil || info.Signo != 0 {
			return fail("%s: the process that reused pid %d was hit (%v, signo %d)", what, decoy.Pid, err, info.Signo)
		}
		fmt.Printf("%s: reused pid %d survived a Kill of the old Proc\n", what, decoy.Pid)
		return 0
	}

	// A child started through the watcher, reaped by it.
	c, err := w.Start("/bin/sleep", []string{"sleep", "60"}, attr)
	if err != nil {
		return fail("%v", err)
	}
	syscall.Kill(c.Pid(), syscall.SIGKILL) // by pid, as someone else would
	if code := check("child", c); code != 0 {
		return code
	}

	// A grandchild, adopted: its shell reaps it.
	rp, wp, _ := os.Pipe()
	sh, err := os.StartProcess("/bin/sh", []string{"sh", "-c", "sleep 60 <&- >/dev/null 2>&1 & echo $!; exec >&-; wait"},
		&os.ProcAttr{Files: []*os.File{null, wp, null}})
	wp.Close()
	if err != nil {
		return fail("%v", err)
	}
	defer sh.Wait()
	line, _ := bufio.NewReader(rp).ReadString('\n')
	gpid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		return fail("grandchild pid %q: %v", line, err)
	}
	a, err := w.Adopt(gpid, nil)
	if err != nil {
		return fail("%v", err)
	}
	if a.Child() {
		return fail("grandchild adopted as a child")
	}
	syscall.Kill(gpid, syscall.SIGKILL)
	return check("adopted", a)
}

// TestCompactKeepsWatching: after Compact rebuilds the table, the
// processes still watched are reaped and the gone ones stay gone.
func TestCompactKeepsWatching(t *testing.T) {
	w := newWatcher(t)
	var gone []*Proc
	for i := 0; i < 20; i++ {
		gone = append(gone, start(t, w, "/bin/true"))
	}
	for _, p := range gone {
		waitDone(t, p)
	}
	p := start(t, w, "/bin/sleep", "60")
	w.Compact()
	if w.Len() != 1 {
		t.Fatalf("%d processes watched after Compact, want 1", w.Len())
	}
	if err := p.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if st := waitDone(t, p); st.Signal != syscall.SIGKILL {
		t.Errorf("status %s, want killed by SIGKILL", st)
	}
	if w.Len() != 0 {
		t.Errorf("%d processes still watched after the exit", w.Len())
	}
}
