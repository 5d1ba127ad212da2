//go:build system

package test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/store"
)

// waitReconciled waits until the running daemon logs that its start-up
// reconcile (which runs in the background while it serves) is done.
func (e *env) waitReconciled() {
	e.t.Helper()
	pid := e.daemonPID()
	mark := fmt.Sprintf("pid=%d ", pid)
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(filepath.Join(e.state, "bangerd.log"))
		s := string(b)
		if i := strings.LastIndex(s, "bangerd serving"); i >= 0 {
			if j := strings.Index(s[i:], "\n"); j >= 0 && strings.Contains(s[i:i+j], mark) && strings.Contains(s[i:], "start-up reconcile done") {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.t.Fatalf("bangerd (pid %d) did not finish its start-up reconcile within 60s:\n%s", pid, e.daemonLogTail())
}

// reconcileTook is how long the last start-up reconcile took, from its log line.
func (e *env) reconcileTook() time.Duration {
	b, _ := os.ReadFile(filepath.Join(e.state, "bangerd.log"))
	m := regexp.MustCompile(`start-up reconcile done" vms=\d+ took=(\S+)`).FindAllStringSubmatch(string(b), -1)
	if len(m) == 0 {
		return -1
	}
	d, _ := time.ParseDuration(m[len(m)-1][1])
	return d
}

// daemonLockPID reads the running daemon's PID from its lock file (no RPC:
// usable while the daemon is busy or dead).
func (e *env) daemonLockPID() int {
	b, err := os.ReadFile(filepath.Join(e.dir, "r", "banger", "bangerd.lock"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// killDaemon SIGKILLs bangerd and waits until it is gone.
func (e *env) killDaemon(pid int) {
	e.t.Helper()
	if pid <= 0 {
		e.t.Fatal("no daemon pid to kill")
	}
	syscall.Kill(pid, syscall.SIGKILL)
	waitGone(e.t, pid)
	// The thread-group leader shows as a zombie while its other threads
	// still exit holding the socket open: wait until it refuses.
	sock := filepath.Join(e.dir, "r", "banger", "bangerd.sock")
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("unix", sock, time.Second)
		if err != nil {
			return
		}
		c.Close()
		if time.Now().After(deadline) {
			e.t.Fatalf("killed bangerd %d still accepts on %s", pid, sock)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// startDaemon runs `banger daemon start` and returns how long it took to
// answer.
func (e *env) startDaemon() time.Duration {
	e.t.Helper()
	t0 := time.Now()
	e.ok("daemon", "start")
	return time.Since(t0)
}

// bangerAsync runs the CLI in the namespace without waiting; the command
// cannot start a daemon of its own (BANGER_DAEMON_BIN points nowhere), so a
// killed daemon stays dead until the test starts one.
func (e *env) bangerAsync(args ...string) *exec.Cmd {
	cmd := exec.Command("ip", append([]string{"netns", "exec", e.ns, e.bins.banger}, args...)...)
	cmd.Env = append(e.environ(), "BANGER_DAEMON_BIN=/nonexistent/bangerd")
	if err := cmd.Start(); err != nil {
		e.t.Fatalf("starting banger %v: %v", args, err)
	}
	return cmd
}

// storeSnapshot is what the store says while no daemon runs.
type storeSnapshot struct {
	vms     []store.VM
	intents []store.Intent
	images  []store.Image
}

func (e *env) readStore() storeSnapshot {
	e.t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(e.state, "banger.db"))
	if err != nil {
		e.t.Fatal(err)
	}
	defer st.Close()
	var s storeSnapshot
	if s.vms, err = st.ListVMs(ctx); err != nil {
		e.t.Fatal(err)
	}
	if s.intents, err = st.ListIntents(ctx); err != nil {
		e.t.Fatal(err)
	}
	if s.images, err = st.ListImages(ctx); err != nil {
		e.t.Fatal(err)
	}
	var ok string
	if err := st.DB().QueryRow("PRAGMA integrity_check").Scan(&ok); err != nil || ok != "ok" {
		e.t.Fatalf("PRAGMA integrity_check: %q %v", ok, err)
	}
	return s
}

// TestReconcileInterruptedStops is issue 11's item 4: eight stops whose
// guests take longer than stop_grace, the daemon killed while they are
// under way. daemon start answers at once, the stops are finished in the
// background concurrently, and a command on one of those VMs waits for its
// stop and then works.
func TestReconcileInterruptedStops(t *testing.T) {
	e := newEnv(t, "")
	e.extra = []string{"FCFAKE_SHUTDOWN_DELAY=30s"} // the guests never finish within stop_grace (3s)
	e.registerImage()
	const n = 8
	var refs []string
	for i := range n {
		refs = append(refs, fmt.Sprintf("s%d", i))
	}
	for _, r := range refs {
		e.ok("vm", "create", r, "--quiet")
	}
	pid := e.daemonLockPID()
	stop := e.bangerAsync(append([]string{"vm", "stop"}, refs...)...)
	deadline := time.Now().Add(20 * time.Second)
	for {
		stopping := 0
		for _, v := range e.vms() {
			if v.State == api.StateStopping {
				stopping++
			}
		}
		if stopping == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d vms stopping", stopping, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.killDaemon(pid)
	stop.Wait()
	if s := e.readStore(); len(s.intents) != n {
		t.Fatalf("want %d stop intents after the kill, got %+v", n, s.intents)
	}
	took := e.startDaemon()
	if took > 2*time.Second {
		t.Fatalf("daemon start took %s with %d stops to finish, want under 2s", took, n)
	}
	// Answers while the stops are finished; a command on one of them waits.
	if len(e.vms()) != n {
		t.Fatal("vm list while reconciling")
	}
	e.ok("vm", "start", "s0")
	if v := e.vm("s0"); v.State != api.StateRunning {
		t.Fatalf("s0 after start: %s", v.State)
	}
	e.waitReconciled()
	if got := e.reconcileTook(); got <= 0 || got > time.Duration(n/2)*3*time.Second {
		t.Fatalf("reconcile of %d interrupted stops took %s: not concurrent (one stop_grace is 3s)", n, got)
	}
	for _, v := range e.vms() {
		if v.Name != "s0" && (v.State != api.StateStopped || !strings.Contains(v.StopReason, "interrupted")) {
			t.Fatalf("%s after reconcile: %s (%s)", v.Name, v.State, v.StopReason)
		}
	}
	if p := e.fcProcesses(); len(p) != 1 {
		t.Fatalf("want only s0's firecracker, got %v", p)
	}
	e.ok(append([]string{"vm", "delete"}, refs...)...)
	e.assertClean()
}

// TestReconcileInterruptedCreates is issue 11's item 1 as its minimal
// repro: ten creates, the daemon killed 30 ms in. After the next start
// every VM left can be started, stopped and deleted, and the image can be
// deleted once they are.
func TestReconcileInterruptedCreates(t *testing.T) {
	e := newEnv(t, "")
	e.registerImage()
	pid := e.daemonLockPID()
	var cmds []*exec.Cmd
	for i := range 10 {
		cmds = append(cmds, e.bangerAsync("vm", "create", fmt.Sprintf("k%d", i), "--quiet"))
	}
	time.Sleep(30 * time.Millisecond)
	e.killDaemon(pid)
	for _, c := range cmds {
		c.Wait()
	}
	before := e.readStore()
	t.Logf("after the kill: %d vms, %d intents", len(before.vms), len(before.intents))
	e.startDaemon()
	e.waitReconciled()
	vms := e.vms()
	sort.Slice(vms, func(i, j int) bool { return vms[i].Name < vms[j].Name })
	var wg sync.WaitGroup
	for _, v := range vms {
		wg.Add(1)
		go func(name string) {
			defer wg.Done()
			e.ok("vm", "start", name)
			e.ok("vm", "stop", name)
			e.ok("vm", "delete", name)
		}(v.Name)
	}
	wg.Wait()
	e.ok("image", "delete", "debian")
	if s := e.readStore(); len(s.intents) != 0 {
		t.Fatalf("intents left: %+v", s.intents)
	}
	e.assertClean()
}
