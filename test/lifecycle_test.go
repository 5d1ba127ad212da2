//go:build system

package test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/store"
)

func syscall_kill(pid int) { syscall.Kill(pid, syscall.SIGKILL) }

func names(vms []api.VM) map[string]api.VM {
	m := map[string]api.VM{}
	for _, v := range vms {
		m[v.Name] = v
	}
	return m
}

// TestLifecycle drives create → list → stop → start → restart → set → kill →
// delete on several VMs and checks the CLI, the store and the host.
func TestLifecycle(t *testing.T) {
	e := newEnv(t, "")
	e.registerImage()

	out := e.ok("vm", "create", "alpha", "--nat")
	if !strings.Contains(out, "alpha is healthy") {
		t.Fatalf("create output: %s", out)
	}
	e.ok("vm", "create", "beta")
	e.ok("vm", "create", "gamma", "--vcpu", "2", "--memory", "512")

	vms := names(e.vms())
	if len(vms) != 3 {
		t.Fatalf("want 3 vms, got %v", vms)
	}
	for _, n := range []string{"alpha", "beta", "gamma"} {
		v := vms[n]
		if v.State != api.StateRunning || v.PID == 0 {
			t.Fatalf("%s: state %s pid %d", n, v.State, v.PID)
		}
		if _, err := os.Stat(v.APISocket); err != nil {
			t.Fatalf("%s api socket: %v", n, err)
		}
	}
	if got := len(e.taps()); got != 3 {
		t.Fatalf("want 3 taps, got %v", e.taps())
	}
	if got := len(e.fcProcesses()); got != 3 {
		t.Fatalf("want 3 firecracker processes, got %d", got)
	}
	if m := e.natMembers(); m != vms["alpha"].IP {
		t.Fatalf("nat set = %q, want only alpha's %s", m, vms["alpha"].IP)
	}
	if h := e.ok("vm", "health", "alpha", "beta"); strings.Count(h, "healthy") < 2 || strings.Contains(h, "unhealthy") {
		t.Fatalf("health: %s", h)
	}

	// stop
	e.ok("vm", "stop", "alpha")
	a := e.vm("alpha")
	if a.State != api.StateStopped || a.PID != 0 {
		t.Fatalf("alpha after stop: %+v", a)
	}
	if strings.Contains(strings.Join(e.taps(), " "), a.Tap) {
		t.Fatalf("alpha's tap %s left after stop", a.Tap)
	}
	if m := e.natMembers(); m != "" {
		t.Fatalf("nat set after stop = %q", m)
	}
	if _, err := os.Stat(a.APISocket); !os.IsNotExist(err) {
		t.Fatalf("api socket left after stop: %v", err)
	}
	if _, err := os.Stat(filepath.Join(a.Dir, "work.ext4")); err != nil {
		t.Fatalf("work disk must survive stop: %v", err)
	}

	// start, restart
	e.ok("vm", "start", "alpha")
	if v := e.vm("alpha"); v.State != api.StateRunning {
		t.Fatalf("alpha after start: %s", v.State)
	}
	oldPID := e.vm("beta").PID
	e.ok("vm", "restart", "beta")
	if v := e.vm("beta"); v.State != api.StateRunning || v.PID == oldPID {
		t.Fatalf("beta after restart: %s pid %d (was %d)", v.State, v.PID, oldPID)
	}

	// set: cpu/memory pending on a running VM
	out = e.ok("vm", "set", "gamma", "--vcpu", "4", "--memory", "1024")
	if g := e.vm("gamma"); g.VCPU != 4 || g.MemoryMiB != 1024 || len(g.PendingChanges) == 0 {
		t.Fatalf("gamma after set: %+v", g)
	}
	e.ok("vm", "set", "beta", "--nat")
	if m := e.natMembers(); !strings.Contains(m, e.vm("beta").IP) {
		t.Fatalf("live nat for beta missing: %q", m)
	}

	// kill
	e.ok("vm", "kill", "gamma")
	if g := e.vm("gamma"); g.State != api.StateStopped || !strings.Contains(g.StopReason, "SIGKILL") {
		t.Fatalf("gamma after kill: %s (%s)", g.State, g.StopReason)
	}

	// batch with a bad ref: the valid ones still run, exit non-zero
	_, errOut, code := e.banger("vm", "stop", "alpha", "nosuch", "alpha", "beta")
	if code == 0 || !strings.Contains(errOut, "nosuch") {
		t.Fatalf("batch stop with a bad ref: code %d stderr %s", code, errOut)
	}
	for _, n := range []string{"alpha", "beta"} {
		if v := e.vm(n); v.State != api.StateStopped {
			t.Fatalf("%s not stopped by batch: %s", n, v.State)
		}
	}

	// delete all
	e.ok("vm", "delete", "alpha", "beta", "gamma")
	if vms := e.vms(); len(vms) != 0 {
		t.Fatalf("vms after delete: %v", vms)
	}
	e.assertClean()
}

// assertClean checks nothing of banger's VMs is left on the host or in the store.
func (e *env) assertClean() {
	t := e.t
	t.Helper()
	if taps := e.taps(); len(taps) != 0 {
		t.Fatalf("taps left: %v", taps)
	}
	if p := e.fcProcesses(); len(p) != 0 {
		t.Fatalf("firecracker processes left: %v", p)
	}
	if m := e.natMembers(); m != "" {
		t.Fatalf("nat elements left: %q", m)
	}
	ents, _ := os.ReadDir(filepath.Join(e.state, "vms"))
	if len(ents) != 0 {
		t.Fatalf("vm directories left: %v", ents)
	}
	e.ok("daemon", "stop")
	st, err := store.Open(context.Background(), filepath.Join(e.state, "banger.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	vms, err := st.ListVMs(context.Background())
	if err != nil || len(vms) != 0 {
		t.Fatalf("store rows left: %v %v", vms, err)
	}
}

// TestForcedStopAndStalePID covers the forced path when the guest ignores
// Ctrl-Alt-Del, and rediscovery of a process whose stored PID is stale.
func TestForcedStopAndStalePID(t *testing.T) {
	e := newEnv(t, "")
	e.extra = []string{"FCFAKE_IGNORE_CTRL_ALT_DEL=1"}
	e.registerImage()
	e.ok("vm", "create", "stubborn")
	start := time.Now()
	e.ok("vm", "stop", "stubborn")
	took := time.Since(start)
	if took > 3*time.Second+2*time.Second {
		t.Fatalf("forced stop took %s, want within stop_grace (3s) + 2s", took)
	}
	if !strings.Contains(e.daemonLogTail(), "stage=wait-for-guest-shutdown") {
		t.Fatalf("daemon log does not name the timeout stage:\n%s", e.daemonLogTail())
	}
	if p := e.fcProcesses(); len(p) != 0 {
		t.Fatalf("process left after forced stop: %v", p)
	}

	// Stale PID: kill the daemon, corrupt the stored PID, restart.
	e.ok("vm", "start", "stubborn")
	pid := e.vm("stubborn").PID
	dpid := e.daemonPID()
	syscall.Kill(dpid, syscall.SIGKILL)
	waitGone(t, dpid)
	st, err := store.Open(context.Background(), filepath.Join(e.state, "banger.db"))
	if err != nil {
		t.Fatal(err)
	}
	vm, err := st.GetVMByName(context.Background(), "stubborn")
	if err != nil {
		t.Fatal(err)
	}
	vm.PID = 999999
	if err := st.UpdateVM(context.Background(), &vm); err != nil {
		t.Fatal(err)
	}
	st.Close()
	e.ok("vm", "stop", "stubborn")
	if alive(pid) {
		t.Fatalf("firecracker pid %d survived stop with a stale stored pid", pid)
	}
	e.ok("vm", "delete", "stubborn")
	e.assertClean()
}

// TestFailStartLeavesNothing: InstanceStart fails; the error says why and
// no host state is left.
func TestFailStartLeavesNothing(t *testing.T) {
	e := newEnv(t, "")
	e.extra = []string{"FCFAKE_FAIL_START=1"}
	e.registerImage()
	_, errOut, code := e.banger("vm", "create", "doomed")
	if code == 0 || !strings.Contains(errOut, "InstanceStart") {
		t.Fatalf("create with failing start: code %d stderr %q", code, errOut)
	}
	var errLines []string
	for _, l := range strings.Split(errOut, "\n") {
		if strings.HasPrefix(l, "banger:") {
			errLines = append(errLines, l)
		}
	}
	if len(errLines) != 1 || !strings.Contains(errLines[0], "delete it") {
		t.Fatalf("want one error line saying what to do, got %q", errOut)
	}
	if taps := e.taps(); len(taps) != 0 {
		t.Fatalf("taps left: %v", taps)
	}
	if p := e.fcProcesses(); len(p) != 0 {
		t.Fatalf("processes left: %v", p)
	}
	v := e.vm("doomed")
	if v.State != api.StateStopped || v.LastError == "" {
		t.Fatalf("doomed: state %s last_error %q", v.State, v.LastError)
	}
	e.ok("vm", "delete", "doomed")
	e.assertClean()
}

// TestDaemonKilledAdoptsAndCleansUp: SIGKILL the daemon while VMs run; one
// VM dies meanwhile. The next daemon adopts the live one and cleans up the
// dead one.
func TestDaemonKilledAdoptsAndCleansUp(t *testing.T) {
	e := newEnv(t, "")
	e.registerImage()
	e.ok("vm", "create", "live")
	e.ok("vm", "create", "dies", "--nat")
	dpid := e.daemonPID()
	dies := e.vm("dies")
	syscall.Kill(dpid, syscall.SIGKILL)
	waitGone(t, dpid)
	syscall.Kill(dies.PID, syscall.SIGKILL)
	waitGone(t, dies.PID)
	e.ok("daemon", "start") // serves at once and reconciles in the background
	e.waitReconciled()
	vms := names(e.vms())
	if vms["live"].State != api.StateRunning {
		t.Fatalf("live not adopted: %s", vms["live"].State)
	}
	if vms["dies"].State != api.StateStopped || vms["dies"].StopReason == "" {
		t.Fatalf("dies: %s (%s)", vms["dies"].State, vms["dies"].StopReason)
	}
	if taps := e.taps(); len(taps) != 1 {
		t.Fatalf("taps after reconcile: %v", taps)
	}
	if m := e.natMembers(); m != "" {
		t.Fatalf("nat left for dead vm: %q", m)
	}
	// The adopted VM is still managed: a stop works and the watcher sees it.
	e.ok("vm", "stop", "live")
	e.ok("vm", "delete", "live", "dies")
	e.assertClean()
}

// TestVMExitNoticed: a VM that exits on its own is noticed at once.
func TestVMExitNoticed(t *testing.T) {
	e := newEnv(t, "")
	e.extra = []string{"FCFAKE_EXIT_AFTER_START=1500ms", "FCFAKE_EXIT_CODE=3"}
	e.registerImage()
	e.banger("vm", "create", "brief")
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		v := e.vm("brief")
		if v.State == api.StateStopped {
			if !strings.Contains(v.StopReason, "exit status 3") {
				t.Fatalf("stop reason %q", v.StopReason)
			}
			if taps := e.taps(); len(taps) != 0 {
				t.Fatalf("taps left: %v", taps)
			}
			e.ok("vm", "delete", "brief")
			e.assertClean()
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("exit not noticed: %+v", e.vm("brief"))
}

// TestConcurrency: stopping 10 VMs in one command overlaps the stops; two
// operations on one VM are serialized.
func TestConcurrency(t *testing.T) {
	e := newEnv(t, "")
	e.registerImage()
	var refs []string
	for i := range 10 {
		refs = append(refs, fmt.Sprintf("c%d", i))
	}
	for _, r := range refs {
		e.ok("vm", "create", r, "--quiet")
	}
	e.ok(append([]string{"vm", "stop"}, refs...)...)
	evs := e.records()
	type window struct{ from, to time.Time }
	wins := map[int]*window{}
	for _, ev := range evs {
		if ev.Event == "request" && ev.Path == "/actions" && strings.Contains(string(ev.Body), "SendCtrlAltDel") {
			wins[ev.PID] = &window{from: ev.T}
		}
	}
	for _, ev := range evs {
		if ev.Event == "exit" {
			if w, ok := wins[ev.PID]; ok {
				w.to = ev.T
			}
		}
	}
	if len(wins) != 10 {
		t.Fatalf("want 10 stop windows, got %d", len(wins))
	}
	var latestFrom, earliestTo time.Time
	for _, w := range wins {
		if w.from.After(latestFrom) {
			latestFrom = w.from
		}
		if earliestTo.IsZero() || w.to.Before(earliestTo) {
			earliestTo = w.to
		}
	}
	if !latestFrom.Before(earliestTo) {
		t.Fatalf("stops did not overlap: last Ctrl-Alt-Del at %s, first exit at %s", latestFrom, earliestTo)
	}

	// Same VM: two restarts at once must not overlap.
	e.ok("vm", "start", "c0")
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() { defer wg.Done(); e.banger("vm", "restart", "c0") }()
	}
	wg.Wait()
	v := e.vm("c0")
	id := "banger-" + v.ID
	type life struct {
		pid        int
		start, end time.Time
	}
	lives := map[int]*life{}
	for _, ev := range e.records() {
		if ev.ID != id {
			continue
		}
		l := lives[ev.PID]
		if l == nil {
			l = &life{pid: ev.PID, start: ev.T}
			lives[ev.PID] = l
		}
		if ev.Event == "exit" {
			l.end = ev.T
		}
	}
	var ls []*life
	for _, l := range lives {
		ls = append(ls, l)
	}
	sort.Slice(ls, func(i, j int) bool { return ls[i].start.Before(ls[j].start) })
	for i := 0; i+1 < len(ls); i++ {
		if ls[i].end.IsZero() || ls[i].end.After(ls[i+1].start) {
			t.Fatalf("processes of one vm overlapped: pid %d ended %s, pid %d started %s", ls[i].pid, ls[i].end, ls[i+1].pid, ls[i+1].start)
		}
	}
	if len(ls) < 4 {
		t.Fatalf("want >= 4 processes for c0 (create, start, 2 restarts), got %d", len(ls))
	}
	e.ok(append([]string{"vm", "delete"}, refs...)...)
	e.assertClean()
}

func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && len(b) > i+2 && b[i+2] != 'Z'
}

func waitGone(t testing.TB, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if !alive(pid) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("pid %d did not exit", pid)
}
