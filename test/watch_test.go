//go:build system

package test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/store"
)

const kvmLine = "Failure in vCPU 0: Received KVM_EXIT_INTERNAL_ERROR. Suberror: 1"

// TestBootDeath: Firecracker dies during boot after logging why. vm create
// and vm start fail (exit 1) with that line, no name is published, and the
// VM is stopped with the reason in last_error and nothing left on the host.
func TestBootDeath(t *testing.T) {
	if _, err := exec.LookPath("dig"); err != nil {
		t.Skip("needs dig (Debian package bind9-dnsutils)")
	}
	e := newEnv(t, "")
	e.extra = []string{"FCFAKE_EXIT_AFTER_START=300ms", "FCFAKE_EXIT_CODE=1", "FCFAKE_EXIT_LOG=" + kvmLine, "FCFAKE_BOOT_DELAY=30s"}
	e.registerImage()
	for _, args := range [][]string{{"vm", "create", "dev"}, {"vm", "start", "dev"}} {
		out, errOut, code := e.banger(args...)
		if code != 1 {
			t.Fatalf("%v: exit %d, want 1\nstdout: %s\nstderr: %s", args, code, out, errOut)
		}
		if strings.Contains(out, "running") || strings.Contains(out, "dev.vm") || strings.Contains(errOut, "unhealthy") {
			t.Fatalf("%v reports a running vm:\nstdout: %s\nstderr: %s", args, out, errOut)
		}
		t.Logf("banger %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
		var errLine string
		for _, l := range strings.Split(errOut, "\n") {
			if strings.HasPrefix(l, "banger: ") {
				errLine = l
			}
		}
		for _, want := range []string{"firecracker exited during boot: firecracker crashed (exit status 1)", "firecracker.log: ", kvmLine} {
			if !strings.Contains(errLine, want) {
				t.Fatalf("%v: error line %q lacks %q\nstderr: %s", args, errLine, want, errOut)
			}
		}
		for _, s := range []string{"127.0.0.1:42069", "172.16.0.1:42069"} {
			if a := e.dig(s, "dev.vm", "A", false); a.status != "NXDOMAIN" || len(a.answers) != 0 {
				t.Fatalf("%v: dev.vm @%s answers %+v, want NXDOMAIN", args, s, a)
			}
		}
		v := e.vm("dev")
		if v.State != api.StateStopped || v.PID != 0 || !strings.Contains(v.LastError, kvmLine) {
			t.Fatalf("%v: vm state %s pid %d last_error %q", args, v.State, v.PID, v.LastError)
		}
		if taps := e.taps(); len(taps) != 0 {
			t.Fatalf("%v: taps left: %v", args, taps)
		}
		if p := e.fcProcesses(); len(p) != 0 {
			t.Fatalf("%v: firecracker processes left: %v", args, p)
		}
	}
	if show := e.ok("vm", "show", "dev"); !strings.Contains(show, kvmLine) {
		t.Fatalf("vm show does not give the reason:\n%s", show)
	}
	e.ok("vm", "delete", "dev")
	e.assertClean()
}

// TestKillSignals: vm kill records what was sent and what ended the
// process; a signal that does not end it leaves the VM running, is not
// followed by SIGKILL and is not called a kill.
func TestKillSignals(t *testing.T) {
	e := newEnv(t, "")
	e.registerImage()
	e.ok("vm", "create", "k")
	pid := e.vm("k").PID

	start := time.Now()
	out, errOut, code := e.banger("vm", "kill", "--signal", "CONT", "k")
	took := time.Since(start)
	if code != 0 || !strings.Contains(out, "signalled k") || strings.Contains(out, "killed") ||
		!strings.Contains(errOut, "sent SIGCONT to firecracker (pid "+strconv.Itoa(pid)+"); it is still running") {
		t.Fatalf("kill --signal CONT: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	t.Logf("kill --signal CONT answered in %s", took.Round(time.Millisecond))
	if v := e.vm("k"); v.State != api.StateRunning || v.PID != pid || !alive(pid) {
		t.Fatalf("after CONT: %s pid %d (was %d), alive %v", v.State, v.PID, pid, alive(pid))
	}
	e.ok("vm", "health", "k")

	if out := e.ok("vm", "kill", "--signal", "TERM", "k"); !strings.Contains(out, "killed k") {
		t.Fatalf("kill --signal TERM: %s", out)
	}
	if v := e.vm("k"); v.State != api.StateStopped || v.StopReason != "sent SIGTERM; firecracker killed by signal SIGTERM" {
		t.Fatalf("after TERM: %s (%q)", v.State, v.StopReason)
	}
	waitGone(t, pid)

	e.ok("vm", "start", "k")
	e.ok("vm", "kill", "k")
	if v := e.vm("k"); v.State != api.StateStopped || v.StopReason != "sent SIGKILL; firecracker killed by signal SIGKILL" || v.LastError != "" {
		t.Fatalf("after kill: %s (%q, last error %q)", v.State, v.StopReason, v.LastError)
	}
	e.ok("vm", "delete", "k")
	e.assertClean()
}

// setStoredPID writes pid as the VM's PID straight into the store (the
// daemon must not be running).
func (e *env) setStoredPID(name string, pid int) {
	e.t.Helper()
	st, err := store.Open(context.Background(), filepath.Join(e.state, "banger.db"))
	if err != nil {
		e.t.Fatal(err)
	}
	defer st.Close()
	vm, err := st.GetVMByName(context.Background(), name)
	if err != nil {
		e.t.Fatal(err)
	}
	vm.PID = pid
	if err := st.UpdateVM(context.Background(), &vm); err != nil {
		e.t.Fatal(err)
	}
}

func startDecoy(t *testing.T) *os.Process {
	t.Helper()
	p, err := os.StartProcess("/bin/sleep", []string{"sleep", "300"}, &os.ProcAttr{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Kill(); p.Wait() })
	return p
}

// TestAdoptDecoyPID: after a daemon crash the stored PIDs of two VMs point
// at decoy processes (not Firecracker). The next daemon adopts the live
// VM's real process by its socket, cleans up the dead one, and neither
// start-up, stop nor kill signals a decoy.
func TestAdoptDecoyPID(t *testing.T) {
	e := newEnv(t, "")
	e.registerImage()
	e.ok("vm", "create", "live")
	e.ok("vm", "create", "dead")
	live, dead := e.vm("live"), e.vm("dead")
	e.killDaemon(e.daemonPID())
	syscall.Kill(dead.PID, syscall.SIGKILL)
	waitGone(t, dead.PID)
	d1, d2 := startDecoy(t), startDecoy(t)
	e.setStoredPID("live", d1.Pid)
	e.setStoredPID("dead", d2.Pid)

	vms := names(e.vms()) // a new daemon reconciles
	if v := vms["live"]; v.State != api.StateRunning || v.PID != live.PID {
		t.Fatalf("live: %s pid %d, want running with its firecracker %d", v.State, v.PID, live.PID)
	}
	if v := vms["dead"]; v.State != api.StateStopped || !strings.Contains(v.StopReason, "not watching") {
		t.Fatalf("dead: %s (%q)", v.State, v.StopReason)
	}
	e.ok("vm", "kill", "dead")
	e.ok("vm", "stop", "dead")
	e.ok("vm", "kill", "live")
	if alive(live.PID) {
		t.Fatalf("live's firecracker %d survived vm kill", live.PID)
	}
	for _, d := range []*os.Process{d1, d2} {
		if !alive(d.Pid) {
			t.Fatalf("decoy %d was killed", d.Pid)
		}
	}
	e.ok("vm", "delete", "live", "dead")
	e.assertClean()
}

// createMany creates VMs prefix0 ... prefix<n-1>, four at a time, and fails
// the test on the first that fails.
func (e *env) createMany(prefix string, n int) {
	e.t.Helper()
	var wg sync.WaitGroup
	errs := make(chan string, n)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 4 {
				if out, errOut, code := e.banger("vm", "create", "-q", fmt.Sprintf("%s%d", prefix, i)); code != 0 {
					errs <- fmt.Sprintf("create %s%d: exit %d: %s %s", prefix, i, code, out, errOut)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for msg := range errs {
		e.t.Fatal(msg)
	}
}

// daemonThreads is the Threads: count of the running daemon.
func (e *env) daemonThreads() int {
	e.t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", e.daemonPID()))
	if err != nil {
		e.t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Threads:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	e.t.Fatal("no Threads: line")
	return 0
}

// TestAdoptManyThreads: 100 running VMs on fcfake; a daemon that adopts
// them all after a crash watches them with a handful of threads, and every
// exit is still noticed.
func TestAdoptManyThreads(t *testing.T) {
	const n = 100
	e := newEnv(t, "")
	e.registerImage()
	idle := e.daemonThreads()
	e.createMany("m", n)
	created := e.daemonThreads()
	e.killDaemon(e.daemonPID())
	e.ok("daemon", "start")
	vms := e.vms()
	for _, v := range vms {
		if v.State != api.StateRunning {
			t.Fatalf("%s not adopted: %s", v.Name, v.State)
		}
	}
	adopted := e.daemonThreads()
	t.Logf("daemon threads: %d idle, %d after %d creates, %d in a fresh daemon that adopted %d running vms (fcfake processes: %d)",
		idle, created, n, adopted, len(vms), len(e.fcProcesses()))
	if adopted >= 20 {
		t.Errorf("%d threads watching %d adopted vms, want fewer than 20", adopted, n)
	}
	// Exits of adopted processes are still noticed, one by one.
	for _, v := range vms[:5] {
		syscall.Kill(v.PID, syscall.SIGKILL)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, v := range vms[:5] {
		for {
			got := e.vm(v.Name)
			if got.State == api.StateStopped {
				if !strings.Contains(got.StopReason, "adopted process") {
					t.Fatalf("%s: stop reason %q", v.Name, got.StopReason)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: exit of an adopted process not noticed: %s", v.Name, got.State)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	refs := make([]string, 0, len(vms))
	for _, v := range vms {
		refs = append(refs, v.Name)
	}
	e.ok(append([]string{"vm", "delete"}, refs...)...)
	e.assertClean()
}
