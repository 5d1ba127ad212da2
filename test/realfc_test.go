//go:build system

package test

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"banger/internal/api"
)

// tinyKernel writes an ELF64 "kernel" of a few instructions that a real
// Firecracker boots: it polls the i8042 status port and, on any byte (the
// Ctrl-Alt-Del that `vm stop` sends), writes the reset command 0xFE to port
// 0x64, so Firecracker exits. With fault set it executes ud2 instead: with
// no IDT that is a triple fault, and Firecracker exits during boot.
func tinyKernel(t *testing.T, path string, fault bool) {
	t.Helper()
	code := []byte{
		0xE4, 0x64, // in al, 0x64
		0xA8, 0x01, // test al, 1
		0x74, 0xFA, // jz -6 (back to the in)
		0xB0, 0xFE, // mov al, 0xfe
		0xE6, 0x64, // out 0x64, al
		0xEB, 0xFE, // jmp $
	}
	if fault {
		code = []byte{0x0F, 0x0B} // ud2
	}
	const base, ehsz, phsz = 0x100000, 64, 56
	b := make([]byte, ehsz+phsz, ehsz+phsz+len(code))
	copy(b, "\x7fELF\x02\x01\x01")
	le := binary.LittleEndian
	le.PutUint16(b[16:], 2)    // ET_EXEC
	le.PutUint16(b[18:], 0x3e) // x86-64
	le.PutUint32(b[20:], 1)
	le.PutUint64(b[24:], base+ehsz+phsz) // entry
	le.PutUint64(b[32:], ehsz)           // program headers
	le.PutUint16(b[52:], ehsz)
	le.PutUint16(b[54:], phsz)
	le.PutUint16(b[56:], 1)
	ph := b[ehsz:]
	le.PutUint32(ph[0:], 1) // PT_LOAD
	le.PutUint32(ph[4:], 7) // RWX
	le.PutUint64(ph[16:], base)
	le.PutUint64(ph[24:], base)
	le.PutUint64(ph[32:], uint64(ehsz+phsz+len(code)))
	le.PutUint64(ph[40:], uint64(ehsz+phsz+len(code)))
	le.PutUint64(ph[48:], 0x1000)
	if err := os.WriteFile(path, append(b, code...), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestRealFirecracker runs the lifecycle against a real Firecracker binary
// named by BANGER_TEST_FIRECRACKER (none ships with the repository, so CI
// skips it): launch and configure, adoption with the same PID after a
// SIGKILLed daemon, stop by Ctrl-Alt-Del, kill, a guest that dies during
// boot reported as failed, and delete leaving nothing. The guest is the
// tiny kernel above, so the agent never answers: create reports the VM
// unhealthy (exit 1) and leaves it running.
func TestRealFirecracker(t *testing.T) {
	fc := os.Getenv("BANGER_TEST_FIRECRACKER")
	if fc == "" {
		t.Skip("set BANGER_TEST_FIRECRACKER to a Firecracker binary to run the lifecycle against it (the repository ships none)")
	}
	if _, err := os.Stat("/dev/kvm"); err != nil {
		t.Skipf("a real Firecracker needs /dev/kvm: %v", err)
	}
	e := newEnv(t, "")
	kernel, fault := filepath.Join(e.dir, "tiny.elf"), filepath.Join(e.dir, "fault.elf")
	tinyKernel(t, kernel, false)
	tinyKernel(t, fault, true)
	e.extra = append(e.extra, "BANGER_FIRECRACKER_BIN="+fc, "BANGER_KERNEL_PATH="+kernel, "BANGER_BOOT_DEADLINE=2s")
	e.registerImage()

	_, errOut, code := e.banger("vm", "create", "r1")
	if code != 1 || !strings.Contains(errOut, "unhealthy") {
		t.Fatalf("create with no agent in the guest: exit %d, %s", code, errOut)
	}
	v := e.vm("r1")
	if v.State != api.StateRunning || v.PID <= 0 {
		t.Fatalf("r1 after create: %s pid %d", v.State, v.PID)
	}
	if comm, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(v.PID), "comm")); !strings.HasPrefix(string(comm), "fc") && !strings.HasPrefix(string(comm), "firecracker") {
		t.Fatalf("pid %d is %q, not firecracker", v.PID, comm)
	}

	// A SIGKILLed daemon: the next one adopts the same process.
	e.killDaemon(e.daemonPID())
	e.ok("daemon", "start")
	e.ok("vm", "list") // waits behind the start-up reconcile of r1
	if got := e.vm("r1"); got.State != api.StateRunning || got.PID != v.PID {
		t.Fatalf("after a daemon kill: %s pid %d, want running pid %d", got.State, got.PID, v.PID)
	}

	// Ctrl-Alt-Del reaches the guest, which resets: a clean stop.
	e.ok("vm", "stop", "r1")
	if got := e.vm("r1"); got.State != api.StateStopped || got.StopReason != "stopped by user" {
		t.Fatalf("after stop: %s (%s)", got.State, got.StopReason)
	}
	if alive(v.PID) {
		t.Fatalf("firecracker pid %d still runs after stop", v.PID)
	}

	e.banger("vm", "start", "r1") // unhealthy again: exit 1, running

	// Suspend to a real snapshot and restore it. Firecracker writes the
	// whole guest memory; banger keeps only the pages that are not zero.
	v = e.vm("r1")
	e.ok("vm", "suspend", "r1")
	sv := e.vm("r1")
	if sv.State != api.StateSuspended || sv.Snapshot == nil || alive(v.PID) {
		t.Fatalf("after suspend: %s %+v (old pid alive %v)", sv.State, sv.Snapshot, alive(v.PID))
	}
	if sv.Snapshot.MemoryBytes != int64(sv.MemoryMiB)<<20 || sv.Snapshot.DiskBytes >= sv.Snapshot.MemoryBytes/4 {
		t.Fatalf("snapshot of a %d MiB guest: %+v, want a sparse memory file", sv.MemoryMiB, sv.Snapshot)
	}
	t.Logf("real Firecracker snapshot of a %d MiB guest: %d bytes on disk (firecracker v%s)", sv.MemoryMiB, sv.Snapshot.DiskBytes, sv.Snapshot.Firecracker)
	if b, err := os.ReadFile(filepath.Join(e.state, "bangerd.log")); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, "snapshot written") {
				t.Logf("daemon: %s", l) // the memory file's allocation before and after the holes
			}
		}
	}
	_, errOut, code = e.banger("vm", "start", "r1") // restored; the tiny guest has no agent: unhealthy, exit 1
	rv := e.vm("r1")
	if code != 1 || rv.State != api.StateRunning || rv.PID <= 0 || rv.PID == v.PID {
		t.Fatalf("restore: exit %d %s, state %s pid %d (before %d)\n%s", code, errOut, rv.State, rv.PID, v.PID, e.daemonLogTail())
	}
	if fcl, _ := os.ReadFile(filepath.Join(rv.Dir, "firecracker.log")); !strings.Contains(string(fcl), "snapshot") {
		t.Fatalf("firecracker's log does not mention the snapshot load:\n%s", fcl)
	}
	if f := snapshotFiles(rv); len(f) != 0 {
		t.Fatalf("snapshot files left after restore: %v", f)
	}
	e.ok("vm", "kill", "r1")
	if got := e.vm("r1"); got.State != api.StateStopped || !strings.Contains(got.StopReason, "SIGKILL") {
		t.Fatalf("after kill: %s (%s)", got.State, got.StopReason)
	}

	// A guest that triple-faults: Firecracker exits during boot, the
	// create fails and publishes nothing.
	e.extra = append(e.extra, "BANGER_KERNEL_PATH="+fault)
	e.ok("daemon", "stop")
	_, errOut, code = e.banger("vm", "create", "r2")
	if code != 1 || !strings.Contains(errOut, "exited during boot") {
		t.Fatalf("create of a guest that dies at once: exit %d, %s", code, errOut)
	}
	if got := e.vm("r2"); got.State != api.StateStopped || got.LastError == "" {
		t.Fatalf("r2: %s, last error %q", got.State, got.LastError)
	}

	e.ok("vm", "delete", "r1", "r2")
	if ents, _ := os.ReadDir(filepath.Join(e.state, "vms")); len(ents) != 0 {
		t.Errorf("vm directories left after delete: %v", ents)
	}
	if out := run(t, "ip", "-n", e.ns, "-o", "link", "show"); strings.Contains(out, "bgt-") {
		t.Errorf("taps left after delete:\n%s", out)
	}
}
