//go:build system

package test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/firecracker"
)

// guestHealth asks the VM's agent directly (over its vsock socket) for
// /healthz: boot id and uptime say which guest instance answers.
func (e *env) guestHealth(name string) agent.Healthz {
	e.t.Helper()
	vm := e.vm(name)
	cl := agent.NewClient(func(ctx context.Context) (net.Conn, error) {
		return firecracker.DialVsock(ctx, vm.VsockPath, agent.DefaultPort)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hz, _, err := cl.Health(ctx)
	if err != nil {
		e.t.Fatalf("agent of %s: %v\n%s", name, err, e.daemonLogTail())
	}
	return hz
}

func snapshotFiles(vm api.VM) []string {
	var have []string
	for _, f := range []string{"snapshot.state", "snapshot.mem", "snapshot.json"} {
		if _, err := os.Stat(filepath.Join(vm.Dir, f)); err == nil {
			have = append(have, f)
		}
	}
	return have
}

func (e *env) wantState(name, state string) api.VM {
	e.t.Helper()
	vm := e.vm(name)
	if vm.State != state {
		e.t.Fatalf("%s is %s (%s %s), want %s\n%s", name, vm.State, vm.StopReason, vm.LastError, state, e.daemonLogTail())
	}
	return vm
}

func (e *env) setClockCalls() int {
	n := 0
	for _, ev := range e.records() {
		if ev.Event == "set_clock" {
			n++
		}
	}
	return n
}

// TestSuspendRestore: pause and resume; suspend frees the process and the
// tap and leaves a sparse snapshot; start restores the same guest (boot id
// kept, uptime continuing) and steps its clock; stop of a suspended VM
// discards the snapshot; vm set --memory refuses until confirmed; delete
// removes everything.
func TestSuspendRestore(t *testing.T) {
	e := newEnv(t, "")
	e.registerImage()
	e.ok("vm", "create", "s1")
	before := e.guestHealth("s1")

	// Pause and resume keep the process, the tap and the DNS name.
	pid := e.vm("s1").PID
	if out := e.ok("vm", "pause", "s1"); !strings.Contains(out, "paused s1") {
		t.Fatalf("vm pause: %q", out)
	}
	if vm := e.wantState("s1", api.StatePaused); vm.PID != pid {
		t.Fatalf("pause changed the pid: %d -> %d", pid, vm.PID)
	}
	if taps := e.taps(); len(taps) != 1 {
		t.Fatalf("taps while paused: %v", taps)
	}
	_, errOut, code := e.banger("vm", "suspend", "nosuch")
	if code == 0 || !strings.Contains(errOut, "nosuch") {
		t.Fatalf("suspend of a missing vm: %d %q", code, errOut)
	}
	e.ok("vm", "resume", "s1")
	e.wantState("s1", api.StateRunning)

	// Suspend.
	if out := e.ok("vm", "suspend", "s1"); !strings.Contains(out, "suspended s1") {
		t.Fatalf("vm suspend: %q", out)
	}
	vm := e.wantState("s1", api.StateSuspended)
	if vm.PID != 0 || alive(pid) {
		t.Fatalf("suspended vm still has a process: %d (old %d alive %v)", vm.PID, pid, alive(pid))
	}
	if taps := e.taps(); len(taps) != 0 {
		t.Fatalf("taps of a suspended vm: %v", taps)
	}
	if vm.Snapshot == nil || vm.Snapshot.MemoryBytes != 256<<20 || vm.Snapshot.DiskBytes <= 0 || vm.Snapshot.DiskBytes > vm.Snapshot.MemoryBytes/4 {
		t.Fatalf("snapshot of a 256 MiB guest: %+v (want sparse: well under its memory size)", vm.Snapshot)
	}
	t.Logf("snapshot of a 256 MiB fcfake guest: %d bytes on disk", vm.Snapshot.DiskBytes)
	if out := e.ok("vm", "list"); !strings.Contains(out, "suspended (") {
		t.Fatalf("vm list does not show the suspended vm with its snapshot size:\n%s", out)
	}
	if out := e.ok("vm", "show", "s1"); !strings.Contains(out, "on disk") {
		t.Fatalf("vm show has no snapshot row:\n%s", out)
	}
	_, errOut, code = e.banger("vm", "resume", "s1")
	if code != 1 || !strings.Contains(errOut, "vm start s1") {
		t.Fatalf("resume of a suspended vm: %d %q", code, errOut)
	}

	// Restore: the same guest instance, its clock stepped.
	clocks := e.setClockCalls()
	time.Sleep(1100 * time.Millisecond) // so a fresh boot's uptime would be visibly smaller
	e.ok("vm", "start", "s1")
	vm = e.wantState("s1", api.StateRunning)
	after := e.guestHealth("s1")
	if after.BootID != before.BootID || after.UptimeS < before.UptimeS {
		t.Fatalf("restored guest is not the same instance: boot id %s -> %s, uptime %.2f -> %.2f", before.BootID, after.BootID, before.UptimeS, after.UptimeS)
	}
	if got := e.setClockCalls(); got != clocks+1 {
		t.Fatalf("clock steps after restore: %d, want %d", got, clocks+1)
	}
	if f := snapshotFiles(vm); len(f) != 0 {
		t.Fatalf("snapshot files left after restore: %v", f)
	}
	if taps := e.taps(); len(taps) != 1 {
		t.Fatalf("taps after restore: %v", taps)
	}

	// Stop of a suspended VM discards the snapshot; the next start is cold.
	e.ok("vm", "suspend", "s1")
	_, errOut, code = e.banger("vm", "stop", "s1")
	if code != 0 || !strings.Contains(errOut, "discarded the snapshot") {
		t.Fatalf("stop of a suspended vm: %d %q", code, errOut)
	}
	vm = e.wantState("s1", api.StateStopped)
	if f := snapshotFiles(vm); len(f) != 0 {
		t.Fatalf("snapshot files left after stop: %v", f)
	}
	e.ok("vm", "start", "s1")
	if cold := e.guestHealth("s1"); cold.BootID == before.BootID {
		t.Fatal("start after a discarded snapshot restored the old guest")
	}

	// vm set --memory on a suspended VM refuses until confirmed.
	e.ok("vm", "suspend", "s1")
	_, errOut, code = e.banger("vm", "set", "s1", "--memory", "512")
	if code != 1 || !strings.Contains(errOut, "invalidates its snapshot") || !strings.Contains(errOut, "--discard-snapshot") {
		t.Fatalf("set --memory on a suspended vm: %d %q", code, errOut)
	}
	vm = e.wantState("s1", api.StateSuspended)
	if vm.MemoryMiB != 256 || len(snapshotFiles(vm)) != 3 {
		t.Fatalf("a refused set changed the vm: %d MiB, files %v", vm.MemoryMiB, snapshotFiles(vm))
	}
	_, errOut, code = e.banger("vm", "set", "s1", "--memory", "512", "--discard-snapshot")
	if code != 0 || !strings.Contains(errOut, "discarded the snapshot") {
		t.Fatalf("set --memory --discard-snapshot: %d %q", code, errOut)
	}
	vm = e.wantState("s1", api.StateStopped)
	if vm.MemoryMiB != 512 || len(snapshotFiles(vm)) != 0 {
		t.Fatalf("after a confirmed set: %d MiB, files %v", vm.MemoryMiB, snapshotFiles(vm))
	}

	// A vm set while it ran (pending) is not in the snapshot: the restore
	// refuses it and says why; --cold applies the change.
	e.ok("vm", "start", "s1")
	e.ok("vm", "set", "s1", "--vcpu", "2")
	e.ok("vm", "suspend", "s1")
	_, errOut, code = e.banger("vm", "start", "s1")
	if code != 1 || !strings.Contains(errOut, "made with 1 vCPUs and 512 MiB and vm set has changed the vm to 2 vCPUs") {
		t.Fatalf("restore after a pending vm set: %d %q", code, errOut)
	}
	e.wantState("s1", api.StateSuspended)
	e.ok("vm", "start", "--cold", "s1")

	// Delete of a suspended VM removes it and its snapshot.
	e.ok("vm", "suspend", "s1")
	e.ok("vm", "delete", "s1")
	e.assertClean()
}

// TestSuspendRefusals: a snapshot from another Firecracker version is
// refused with the reason and kept (start --cold discards it); a failed
// load keeps the snapshot; a failed create leaves the VM running.
func TestSuspendRefusals(t *testing.T) {
	e := newEnv(t, "")
	e.registerImage()
	e.ok("vm", "create", "v1")
	e.ok("vm", "suspend", "v1")
	e.stopDaemonAndWait()

	// Firecracker upgraded under the suspended VM.
	e.extra = []string{"FCFAKE_VERSION=1.16.2"}
	e.ok("daemon", "start")
	_, errOut, code := e.banger("vm", "start", "v1")
	if code != 1 || !strings.Contains(errOut, "made by Firecracker v1.16.1") || !strings.Contains(errOut, "v1.16.2") || !strings.Contains(errOut, "--cold") {
		t.Fatalf("start with another firecracker version: %d %q", code, errOut)
	}
	vm := e.wantState("v1", api.StateSuspended)
	if f := snapshotFiles(vm); len(f) != 3 {
		t.Fatalf("refused snapshot not kept: %v", f)
	}
	if p := e.fcProcesses(); len(p) != 0 {
		t.Fatalf("a refused restore left firecracker processes: %v", p)
	}
	_, errOut, code = e.banger("vm", "start", "--cold", "v1")
	if code != 0 || !strings.Contains(errOut, "discarded the snapshot") {
		t.Fatalf("start --cold: %d %q", code, errOut)
	}
	e.wantState("v1", api.StateRunning)

	// A failed load (damaged in a way only Firecracker sees) keeps the
	// snapshot and says why.
	e.ok("vm", "suspend", "v1")
	e.stopDaemonAndWait()
	e.extra = []string{"FCFAKE_VERSION=1.16.2", "FCFAKE_FAIL_SNAPSHOT_LOAD=1"}
	e.ok("daemon", "start")
	_, errOut, code = e.banger("vm", "start", "v1")
	if code != 1 || !strings.Contains(errOut, "could not load the snapshot") || !strings.Contains(errOut, "FCFAKE_FAIL_SNAPSHOT_LOAD") {
		t.Fatalf("start with a failing load: %d %q", code, errOut)
	}
	vm = e.wantState("v1", api.StateSuspended)
	if f := snapshotFiles(vm); len(f) != 3 {
		t.Fatalf("snapshot not kept after a failed load: %v", f)
	}
	if taps := e.taps(); len(taps) != 0 {
		t.Fatalf("a failed restore left taps: %v", taps)
	}
	// A damaged memory file is seen before anything is launched.
	os.Truncate(filepath.Join(vm.Dir, "snapshot.mem"), 4096)
	_, errOut, code = e.banger("vm", "start", "v1")
	if code != 1 || !strings.Contains(errOut, "memory file") {
		t.Fatalf("start with a truncated memory file: %d %q", code, errOut)
	}
	e.wantState("v1", api.StateSuspended)
	e.ok("vm", "start", "--cold", "v1")

	// A failed create leaves the VM running as it was.
	e.stopDaemonAndWait()
	e.extra = []string{"FCFAKE_VERSION=1.16.2", "FCFAKE_FAIL_SNAPSHOT_CREATE=1"}
	e.ok("daemon", "start")
	e.waitReconciled()
	e.ok("vm", "restart", "v1") // a Firecracker with this daemon's switches
	before := e.guestHealth("v1")
	_, errOut, code = e.banger("vm", "suspend", "v1")
	if code != 1 || !strings.Contains(errOut, "creating the snapshot") {
		t.Fatalf("suspend with a failing create: %d %q", code, errOut)
	}
	vm = e.wantState("v1", api.StateRunning)
	if f := snapshotFiles(vm); len(f) != 0 {
		t.Fatalf("partial snapshot left: %v", f)
	}
	if h := e.guestHealth("v1"); h.BootID != before.BootID {
		t.Fatal("a failed suspend restarted the guest")
	}

	// An agent from before protocol 2 cannot step the clock: the restore
	// goes on and the daemon logs why.
	e.stopDaemonAndWait()
	e.extra = []string{"FCFAKE_AGENT_LEGACY=1"}
	e.ok("daemon", "start")
	e.waitReconciled()
	e.ok("vm", "restart", "v1")
	clocks := e.setClockCalls()
	e.ok("vm", "suspend", "v1")
	e.ok("vm", "start", "v1")
	if got := e.setClockCalls(); got != clocks {
		t.Fatalf("a legacy agent got %d clock steps", got-clocks)
	}
	if log, _ := os.ReadFile(filepath.Join(e.state, "bangerd.log")); !strings.Contains(string(log), "not stepping the restored guest's clock") {
		t.Fatalf("no log line for the skipped clock step:\n%s", e.daemonLogTail())
	}
	e.ok("vm", "delete", "v1")
	e.assertClean()
}

// TestSuspendDaemonKilled: bangerd SIGKILLed while Firecracker writes the
// snapshot, and again while it loads one, recovers to a VM that start,
// stop and delete work on.
func TestSuspendDaemonKilled(t *testing.T) {
	e := newEnv(t, "")
	e.extra = []string{"FCFAKE_SNAPSHOT_DELAY=2s"}
	e.registerImage()
	e.ok("vm", "create", "k1")
	boot := e.guestHealth("k1").BootID

	// Killed during snapshot create: the suspend is undone, the guest runs on.
	cmd := e.bangerAsync("vm", "suspend", "k1")
	e.waitRecord("request", "/snapshot/create")
	dpid := e.daemonLockPID()
	syscall.Kill(dpid, syscall.SIGKILL)
	waitGone(t, dpid)
	cmd.Wait()
	e.ok("daemon", "start")
	e.waitReconciled()
	vm := e.wantState("k1", api.StateRunning)
	if h := e.guestHealth("k1"); h.BootID != boot {
		t.Fatal("recovery from an interrupted suspend restarted the guest")
	}
	if f := snapshotFiles(vm); len(f) != 0 {
		t.Fatalf("partial snapshot left after recovery: %v", f)
	}

	// Killed during snapshot load: the restore is finished (Firecracker
	// loaded it and runs the guest).
	e.ok("vm", "suspend", "k1")
	os.Truncate(e.record, 0)
	cmd = e.bangerAsync("vm", "start", "k1")
	e.waitRecord("request", "/snapshot/load")
	dpid = e.daemonLockPID()
	syscall.Kill(dpid, syscall.SIGKILL)
	waitGone(t, dpid)
	cmd.Wait()
	e.ok("daemon", "start")
	e.waitReconciled()
	vm = e.wantState("k1", api.StateRunning)
	if h := e.guestHealth("k1"); h.BootID != boot {
		t.Fatalf("interrupted restore: boot id %s, want the suspended guest's %s", h.BootID, boot)
	}
	if f := snapshotFiles(vm); len(f) != 0 {
		t.Fatalf("snapshot left after a finished restore: %v", f)
	}
	// Start, stop and delete work.
	e.ok("vm", "stop", "k1")
	e.ok("vm", "start", "k1")
	boot = e.guestHealth("k1").BootID
	e.ok("vm", "suspend", "k1")

	// Killed during a restore before the load (Firecracker's API socket
	// comes late): the restore is undone, the VM suspended with its snapshot.
	e.stopDaemonAndWait()
	e.extra = []string{"FCFAKE_SNAPSHOT_DELAY=2s", "FCFAKE_SOCKET_DELAY=3s"}
	e.ok("daemon", "start")
	e.waitReconciled()
	os.Truncate(e.record, 0)
	cmd = e.bangerAsync("vm", "start", "k1")
	e.waitRecord("start", "")
	dpid = e.daemonLockPID()
	syscall.Kill(dpid, syscall.SIGKILL)
	waitGone(t, dpid)
	cmd.Wait()
	e.extra = []string{"FCFAKE_SNAPSHOT_DELAY=2s"}
	e.ok("daemon", "start")
	e.waitReconciled()
	vm = e.wantState("k1", api.StateSuspended)
	if f := snapshotFiles(vm); len(f) != 3 {
		t.Fatalf("snapshot after an undone restore: %v", f)
	}
	if p := e.fcProcesses(); len(p) != 0 {
		t.Fatalf("an undone restore left firecracker processes: %v", p)
	}
	if taps := e.taps(); len(taps) != 0 {
		t.Fatalf("an undone restore left taps: %v", taps)
	}
	e.ok("vm", "start", "k1")
	if h := e.guestHealth("k1"); h.BootID != boot {
		t.Fatal("the snapshot kept by an undone restore did not restore the same guest")
	}
	e.ok("vm", "delete", "k1")

	// Killed after Firecracker wrote the snapshot, while banger punches the
	// zero pages out of a 512 MiB memory file or records the identity: the
	// suspend is either undone (no snapshot.json yet: the guest runs on) or
	// finished (suspended, and the restore brings the same guest back).
	e.ok("vm", "create", "k2", "--memory", "512")
	boot = e.guestHealth("k2").BootID
	os.Truncate(e.record, 0)
	cmd = e.bangerAsync("vm", "suspend", "k2")
	e.waitRecord("response", "/snapshot/create")
	dpid = e.daemonLockPID()
	syscall.Kill(dpid, syscall.SIGKILL)
	waitGone(t, dpid)
	cmd.Wait()
	e.ok("daemon", "start")
	e.waitReconciled()
	vm = e.vm("k2")
	t.Logf("killed after the snapshot was written: recovered to %s", vm.State)
	switch vm.State {
	case api.StateRunning:
		if f := snapshotFiles(vm); len(f) != 0 {
			t.Fatalf("undone suspend left %v", f)
		}
	case api.StateSuspended:
		if f := snapshotFiles(vm); len(f) != 3 {
			t.Fatalf("finished suspend has %v", f)
		}
		e.ok("vm", "start", "k2")
	default:
		t.Fatalf("k2 recovered to %s (%s)", vm.State, vm.LastError)
	}
	if h := e.guestHealth("k2"); h.BootID != boot {
		t.Fatal("the guest did not survive the interrupted suspend")
	}
	e.ok("vm", "stop", "k2")
	e.ok("vm", "delete", "k2")
	e.assertClean()
}

// waitRecord waits for fcfake to record an event of kind ("request" and
// "response" of an API call to path; "start" of a process, path "").
func (e *env) waitRecord(kind, path string) {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for _, ev := range e.records() {
			if ev.Event == kind && (path == "" || ev.Path == path) {
				return
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	e.t.Fatalf("fcfake recorded no %s %s within 30s\n%s", kind, path, e.daemonLogTail())
}
