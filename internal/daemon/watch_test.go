package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/dns"
	"banger/internal/procwatch"
	"banger/internal/store"
)

// unitDaemon is a daemon that is not serving: its store, locks and process
// watcher, over the fake host, for tests that drive its methods directly.
func unitDaemon(t testing.TB) *Daemon {
	t.Helper()
	getenv := testEnv(t)
	paths, err := config.DefaultPaths(getenv)
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := config.Load(paths, getenv)
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(context.Background(), Options{Loaded: loaded, Host: newHostFake()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.close)
	return d
}

// addVM records a VM (and an image for it) in the store, with its directory.
func addVM(t testing.TB, d *Daemon, name string) store.VM {
	t.Helper()
	ctx := context.Background()
	img, err := d.store.GetImageByName(ctx, "img")
	if errors.Is(err, store.ErrNotFound) {
		img = store.Image{Name: "img", RootfsPath: "/nonexistent/rootfs.ext4", Source: store.SourceRegistered}
		if err := d.store.CreateImage(ctx, &img); err != nil {
			t.Fatal(err)
		}
		img, err = d.store.GetImageByName(ctx, "img")
	}
	if err != nil {
		t.Fatal(err)
	}
	vm := store.VM{ID: store.NewID(), Name: name, ImageID: img.ID, VCPU: 1, MemoryMiB: 128}
	vm.Dir = filepath.Join(d.paths.VMsDir, vm.ID)
	if err := os.MkdirAll(vm.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := d.store.CreateVM(ctx, &vm, d.alloc); err != nil {
		t.Fatal(err)
	}
	return vm
}

// fakeFirecracker starts, through the daemon's watcher, a shell that names
// the VM's API socket on its command line (so livePID and Adopt take it for
// the VM's Firecracker) and waits on a pipe it never reads from: one
// process, no children, ended only by a signal.
func fakeFirecracker(t *testing.T, d *Daemon, vm *store.VM, script string) *procwatch.Proc {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	null, _ := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	p, err := d.vms.w.Start("/bin/sh", []string{"sh", "-c", script, "sh", "--api-sock", apiSock(vm)},
		&os.ProcAttr{Dir: vm.Dir, Files: []*os.File{r, null, null}})
	r.Close()
	null.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Kill(); errors.Is(err, procwatch.ErrReleased) {
			// The test closed the watcher: kill and reap by pid.
			syscall.Kill(p.Pid(), syscall.SIGKILL)
			var ws syscall.WaitStatus
			syscall.Wait4(p.Pid(), &ws, 0, nil)
		}
		w.Close()
	})
	return p
}

// running makes vm running under the watched process p.
func running(t *testing.T, d *Daemon, vm *store.VM, p *procwatch.Proc) *proc {
	t.Helper()
	pr := d.watch(vm, p, wholeLogs(vm))                                   // the tests write the logs first
	vm.State, vm.PID, vm.StartedAt = api.StateRunning, pr.pid, time.Now() // as a start records it
	if err := d.store.UpdateVM(context.Background(), vm); err != nil {
		t.Fatal(err)
	}
	return pr
}

func getVM(t *testing.T, d *Daemon, id string) store.VM {
	t.Helper()
	vm, err := d.store.GetVM(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return vm
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func writeLog(t *testing.T, vm *store.VM, file, text string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(vm.Dir, file), []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

const kvmLog = "2025-01-02T03:04:05.000000006 [banger-x:main] Running Firecracker v1.16.1\n" +
	"2025-01-02T03:04:05.100000000 [banger-x:fc_vcpu 0] Received KVM_EXIT_INTERNAL_ERROR signal\n" +
	"2025-01-02T03:04:05.200000000 [banger-x:main] Vmm is stopping.\n"

// stateEvents counts the vm.state events for vm that say state.
func stateEvents(evs []api.Event, id, state string) int {
	n := 0
	for _, ev := range evs {
		if ev.Kind == api.EventVMState && ev.VMID == id && ev.VM != nil && ev.VM.State == state {
			n++
		}
	}
	return n
}

func drain(ch chan api.Event) []api.Event {
	var evs []api.Event
	for {
		select {
		case ev := <-ch:
			evs = append(evs, ev)
		default:
			return evs
		}
	}
}

// A VM whose Firecracker exits after reconcile took the VM's lock and
// before onExit could: reconcile must record the real exit (status and log
// lines), not "exited while bangerd was not watching", and only once.
func TestExitBetweenReconcileLockAndOnExit(t *testing.T) {
	d := unitDaemon(t)
	vm := addVM(t, d, "racy")
	writeLog(t, &vm, fileFCLog, kvmLog)
	pr := running(t, d, &vm, fakeFirecracker(t, d, &vm, "read x; exit 1"))
	evs, unsub := d.events.subscribe()
	defer unsub()

	unlock := d.locks.lock(vm.ID) // reconcile's tryLock won
	pr.p.Signal(syscall.SIGKILL)  // (a kill by hand ends it; status as seen by the watcher)
	<-pr.done                     // the watcher saw the exit; onExit waits for the lock
	v := getVM(t, d, vm.ID)
	d.reconcileOne(context.Background(), &v)
	unlock()
	d.vms.close() // waits for onExit to finish

	got := getVM(t, d, vm.ID)
	if got.State != api.StateStopped || got.PID != 0 {
		t.Fatalf("after the exit: state %s pid %d", got.State, got.PID)
	}
	for _, want := range []string{"firecracker killed by signal SIGKILL", "firecracker.log: [banger-x:fc_vcpu 0] Received KVM_EXIT_INTERNAL_ERROR signal"} {
		if !strings.Contains(got.StopReason, want) {
			t.Errorf("stop reason %q lacks %q", got.StopReason, want)
		}
	}
	if strings.Contains(got.StopReason, "not watching") {
		t.Errorf("stop reason %q: the real reason was lost", got.StopReason)
	}
	if got.LastError != got.StopReason {
		t.Errorf("last error %q, want the crash reason", got.LastError)
	}
	if n := stateEvents(drain(evs), vm.ID, api.StateStopped); n != 1 {
		t.Errorf("exit recorded %d times, want once", n)
	}
	if len(d.vms.all()) != 0 {
		t.Errorf("processes still tracked: %v", d.vms.all())
	}
}

// The same exit with nobody else holding the lock: onExit records it.
func TestExitRecordedByWatcher(t *testing.T) {
	d := unitDaemon(t)
	vm := addVM(t, d, "brief")
	writeLog(t, &vm, fileConsole, "[    0.3] Run /sbin/init as init process\n[    1.0] Kernel panic - not syncing: Attempted to kill init!\n")
	evs, unsub := d.events.subscribe()
	defer unsub()
	running(t, d, &vm, fakeFirecracker(t, d, &vm, "sleep 0.3; exit 3"))
	waitUntil(t, "the exit to be recorded", func() bool { return getVM(t, d, vm.ID).State == api.StateStopped })
	// A reconcile afterwards finds nothing left to do.
	d.reconcile(context.Background())
	d.vms.close()
	got := getVM(t, d, vm.ID)
	want := "firecracker crashed (exit status 3); console.log: [    1.0] Kernel panic - not syncing: Attempted to kill init!"
	if got.StopReason != want {
		t.Errorf("stop reason %q, want %q", got.StopReason, want)
	}
	if n := stateEvents(drain(evs), vm.ID, api.StateStopped); n != 1 {
		t.Errorf("exit recorded %d times, want once", n)
	}
}

// Reconcile leaves a VM whose process the watcher holds alone, even when
// /proc would not show it as the VM's Firecracker.
func TestReconcileTrustsTheWatcher(t *testing.T) {
	d := unitDaemon(t)
	vm := addVM(t, d, "quiet")
	null, _ := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	defer null.Close()
	p, err := d.vms.w.Start("/bin/sleep", []string{"sleep", "60"}, &os.ProcAttr{Files: []*os.File{null, null, null}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Kill()
	running(t, d, &vm, p)
	d.reconcile(context.Background())
	if got := getVM(t, d, vm.ID); got.State != api.StateRunning || got.PID != p.Pid() {
		t.Fatalf("reconcile changed a watched, live vm: %s pid %d (%s)", got.State, got.PID, got.StopReason)
	}
}

// At start-up, a running VM whose process is gone is recorded with the last
// error lines of its logs.
func TestExitFoundAtStartup(t *testing.T) {
	d := unitDaemon(t)
	vm := addVM(t, d, "gone")
	writeLog(t, &vm, fileFCLog, kvmLog)
	dead, err := os.StartProcess("/bin/true", []string{"true"}, &os.ProcAttr{})
	if err != nil {
		t.Fatal(err)
	}
	dead.Wait()
	vm.State, vm.PID = api.StateRunning, dead.Pid
	if err := d.store.UpdateVM(context.Background(), &vm); err != nil {
		t.Fatal(err)
	}
	d.reconcile(context.Background())
	got := getVM(t, d, vm.ID)
	if got.State != api.StateStopped || !strings.HasPrefix(got.StopReason, "firecracker exited while bangerd was not watching; firecracker.log: ") ||
		!strings.Contains(got.StopReason, "KVM_EXIT_INTERNAL_ERROR") {
		t.Fatalf("state %s, stop reason %q", got.State, got.StopReason)
	}
}

// A decoy process whose pid was written into the store as the VM's is
// never signalled: it does not name the VM's API socket.
func TestKillSparesDecoy(t *testing.T) {
	d := unitDaemon(t)
	vm := addVM(t, d, "decoyed")
	decoy, err := os.StartProcess("/bin/sleep", []string{"sleep", "60"}, &os.ProcAttr{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { decoy.Kill(); decoy.Wait() }()
	vm.State, vm.PID = api.StateRunning, decoy.Pid
	if err := d.store.UpdateVM(context.Background(), &vm); err != nil {
		t.Fatal(err)
	}
	// killWait is handed the pid directly (the forced-stop path).
	if err := d.killWait(context.Background(), &vm, decoy.Pid, syscall.SIGKILL); err != nil {
		t.Fatalf("killWait: %v", err)
	}
	res := kill(t, d, vm.Name, "KILL")
	if len(res.Notices) == 0 || !strings.Contains(res.Notices[0], "no running process") {
		t.Errorf("notices %q", res.Notices)
	}
	time.Sleep(50 * time.Millisecond)
	if err := decoy.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("the decoy was killed: %v", err)
	}
	var ws syscall.WaitStatus
	if pid, _ := syscall.Wait4(decoy.Pid, &ws, syscall.WNOHANG, nil); pid != 0 {
		t.Fatalf("the decoy ended: %v", ws)
	}
	if got := getVM(t, d, vm.ID); got.State != api.StateStopped || got.PID != 0 {
		t.Errorf("vm after kill: %s pid %d", got.State, got.PID)
	}
}

func kill(t *testing.T, d *Daemon, ref, sig string) api.VMResult {
	t.Helper()
	raw, _ := json.Marshal(api.VMKillParams{Ref: ref, Signal: sig})
	out, err := d.rpcKill(context.Background(), raw)
	if err != nil {
		t.Fatalf("kill --signal %s: %v", sig, err)
	}
	return out.(api.VMResult)
}

// vm kill records what was sent and what ended the process; a signal that
// does not end it is reported as such, with no SIGKILL after it.
func TestKillSignals(t *testing.T) {
	d := unitDaemon(t)
	vm := addVM(t, d, "sig")

	pr := running(t, d, &vm, fakeFirecracker(t, d, &vm, "read x"))
	start := time.Now()
	res := kill(t, d, "sig", "CONT")
	if res.VM.State != api.StateRunning || len(res.Notices) != 1 || !strings.Contains(res.Notices[0], "sent SIGCONT to firecracker (pid "+strconv.Itoa(pr.pid)+"); it is still running") {
		t.Fatalf("kill CONT: state %s, notices %q", res.VM.State, res.Notices)
	}
	t.Logf("kill --signal CONT answered after %s", time.Since(start).Round(time.Millisecond))
	if pr.exited() {
		t.Fatal("SIGCONT was followed by a kill")
	}
	if got := getVM(t, d, vm.ID); got.State != api.StateRunning || got.StopReason != "" {
		t.Fatalf("vm after CONT: %s (%q)", got.State, got.StopReason)
	}

	res = kill(t, d, "sig", "STOP")
	if len(res.Notices) != 1 || !strings.Contains(res.Notices[0], "stopped: send CONT") || pr.exited() {
		t.Fatalf("kill STOP: notices %q, exited %v", res.Notices, pr.exited())
	}
	kill(t, d, "sig", "CONT")

	res = kill(t, d, "sig", "TERM")
	if got := getVM(t, d, vm.ID); res.VM.State != api.StateStopped || got.StopReason != "sent SIGTERM; firecracker killed by signal SIGTERM" {
		t.Fatalf("kill TERM: state %s, stop reason %q", got.State, got.StopReason)
	}
	if !pr.exited() {
		t.Fatal("process runs after TERM was reported to end it")
	}

	vm = getVM(t, d, vm.ID)
	pr = running(t, d, &vm, fakeFirecracker(t, d, &vm, "trap '' TERM; read x"))
	waitUntil(t, "the shell to ignore TERM", func() bool { return ignores(pr.pid, syscall.SIGTERM) })
	res = kill(t, d, "sig", "TERM")
	if res.VM.State != api.StateRunning || pr.exited() {
		t.Fatalf("a handled TERM: state %s, exited %v", res.VM.State, pr.exited())
	}
	res = kill(t, d, "sig", "")
	if got := getVM(t, d, vm.ID); res.VM.State != api.StateStopped || got.StopReason != "sent SIGKILL; firecracker killed by signal SIGKILL" || got.LastError != "" {
		t.Fatalf("kill: state %s, stop reason %q, last error %q", got.State, got.StopReason, got.LastError)
	}
	d.vms.close()
	if n := len(d.vms.all()); n != 0 {
		t.Errorf("%d processes still tracked", n)
	}
}

// ignores reports whether pid ignores sig (SigIgn in /proc/PID/status).
func ignores(pid int, sig syscall.Signal) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "SigIgn:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && mask&(1<<(uint(sig)-1)) != 0
		}
	}
	return false
}

// waitHealthy fails, with Firecracker's reason, when it dies during boot.
func TestWaitHealthyBootDeath(t *testing.T) {
	d := unitDaemon(t)
	vm := addVM(t, d, "boot")
	writeLog(t, &vm, fileFCLog, kvmLog)
	pr := running(t, d, &vm, fakeFirecracker(t, d, &vm, "sleep 0.2; exit 1"))
	start := time.Now()
	h, err := d.waitHealthy(context.Background(), &vm, pr)
	if err == nil {
		t.Fatalf("waitHealthy: %+v, want an error", h)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("death noticed after %s", took)
	}
	want := "firecracker crashed (exit status 1); firecracker.log: [banger-x:fc_vcpu 0] Received KVM_EXIT_INTERNAL_ERROR signal"
	if err.Error() != want {
		t.Errorf("error %q\nwant  %q", err, want)
	}
}

// threadCount is this process's Threads: from /proc/self/status.
func threadCount(t *testing.T) int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Threads:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	t.Fatal("no Threads: line")
	return 0
}

// The daemon's threads do not grow with its running VMs: 200 watched
// Firecracker stand-ins, then all exit and are cleaned up.
func TestDaemonThreadsWith200VMs(t *testing.T) {
	const n = 200
	d := unitDaemon(t)
	before := threadCount(t)
	var prs []*proc
	for i := range n {
		vm := addVM(t, d, "t"+strconv.Itoa(i))
		prs = append(prs, running(t, d, &vm, fakeFirecracker(t, d, &vm, "read x")))
	}
	d.reconcile(context.Background())
	time.Sleep(200 * time.Millisecond)
	during := threadCount(t)
	for _, pr := range prs {
		pr.p.Kill()
	}
	waitUntil(t, "every exit to be recorded", func() bool {
		counts, err := d.store.CountVMsByState(context.Background())
		return err == nil && counts[api.StateStopped] == n
	})
	after := threadCount(t)
	t.Logf("daemon threads: %d before, %d with %d running vms, %d after they exited", before, during, n, after)
	if during >= 20 {
		t.Errorf("%d threads with %d running vms, want fewer than 20", during, n)
	}
	vms, err := d.store.ListVMs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vms {
		if v.State != api.StateStopped || v.StopReason != "firecracker killed by signal SIGKILL" {
			t.Fatalf("%s: %s (%s)", v.Name, v.State, v.StopReason)
		}
	}
	if left := len(d.vms.all()); left != 0 {
		t.Errorf("%d processes still tracked", left)
	}
}

// A VM an operation holds (a start waiting for its agent) is recorded
// running before its name is published: a reconcile meanwhile must not
// publish it, and must keep it once published; free VMs follow the store.
func TestRebuildDNSLeavesLockedVMsAlone(t *testing.T) {
	d := unitDaemon(t)
	if d.net == nil {
		d.net = &netState{}
	}
	d.net.records = dns.NewRecords()
	booting, free := addVM(t, d, "booting"), addVM(t, d, "free")
	for _, vm := range []*store.VM{&booting, &free} {
		vm.State = api.StateRunning
		if err := d.store.UpdateVM(context.Background(), vm); err != nil {
			t.Fatal(err)
		}
	}
	unlock := d.locks.lock(booting.ID)
	d.rebuildDNS(context.Background())
	if _, ok := d.net.records.LookupName("booting"); ok {
		t.Error("a locked, booting vm was published by a reconcile")
	}
	if _, ok := d.net.records.LookupName("free"); !ok {
		t.Error("a running, unlocked vm was not published")
	}
	d.net.records.Set("booting", booting.IP) // the start publishes it once healthy
	d.rebuildDNS(context.Background())
	if _, ok := d.net.records.LookupName("booting"); !ok {
		t.Error("a reconcile dropped the name a locked vm's start published")
	}
	unlock()
	booting.State = api.StateStopped
	if err := d.store.UpdateVM(context.Background(), &booting); err != nil {
		t.Fatal(err)
	}
	d.rebuildDNS(context.Background())
	if _, ok := d.net.records.LookupName("booting"); ok {
		t.Error("a stopped, unlocked vm is still published")
	}
}

// A daemon killed during `vm set --nat` may leave the VM's NAT membership
// and its record apart; adopting the running VM brings them together.
func TestAdoptionMatchesNATToTheRecord(t *testing.T) {
	for _, nat := range []bool{false, true} {
		d := unitDaemon(t)
		if d.net == nil {
			d.net = &netState{}
		}
		h := d.host.(*hostFake)
		vm := addVM(t, d, "natty")
		p := fakeFirecracker(t, d, &vm, "read x")
		vm.State, vm.PID, vm.StartedAt, vm.NAT = api.StateRunning, p.Pid(), time.Now(), nat
		if err := d.store.UpdateVM(context.Background(), &vm); err != nil {
			t.Fatal(err)
		}
		h.mu.Lock()
		h.nat[vm.IP] = !nat // the host says the opposite of the record
		h.mu.Unlock()
		d.reconcile(context.Background())
		h.mu.Lock()
		got := h.nat[vm.IP]
		h.mu.Unlock()
		if got != nat {
			t.Errorf("record nat=%v: after adoption the host has nat=%v", nat, got)
		}
		if v := getVM(t, d, vm.ID); v.State != api.StateRunning || v.PID != p.Pid() {
			t.Errorf("record nat=%v: adoption changed the vm: %s pid %d", nat, v.State, v.PID)
		}
	}
}

// Adopting many running VMs at once goes through a few workers: each
// adoption makes blocking calls (here a slow NAT change), and the Go
// runtime keeps a thread for every goroutine blocked in one.
func TestReconcileBoundsConcurrentAdoptions(t *testing.T) {
	const n = 40
	d := unitDaemon(t)
	if d.net == nil {
		d.net = &netState{}
	}
	h := d.host.(*hostFake)
	h.natDelay = 20 * time.Millisecond
	var ids []string
	for i := range n {
		vm := addVM(t, d, "a"+strconv.Itoa(i))
		p := fakeFirecracker(t, d, &vm, "read x")
		vm.State, vm.PID, vm.StartedAt = api.StateRunning, p.Pid(), time.Now()
		if err := d.store.UpdateVM(context.Background(), &vm); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, vm.ID)
	}
	t0 := time.Now()
	d.reconcile(context.Background())
	took := time.Since(t0)
	for i, id := range ids {
		if d.vms.get(id) == nil {
			t.Fatalf("a%d was not adopted", i)
		}
	}
	h.mu.Lock()
	peak := h.natPeak
	h.mu.Unlock()
	t.Logf("%d adoptions: at most %d under way at once, %s in all", n, peak, took.Round(time.Millisecond))
	if peak > reconcileWorkers {
		t.Errorf("%d adoptions were under way at once, want at most %d", peak, reconcileWorkers)
	}
}

// TestSampleCapsConsoles: a stats sample trims a running VM's console.log
// to consoleMaxBytes, with the path from its watched process: the sample
// reads nothing from the store (with 500 VMs it read 500 rows a second).
func TestSampleCapsConsoles(t *testing.T) {
	d := unitDaemon(t)
	vm := addVM(t, d, "a")
	console := filepath.Join(vm.Dir, fileConsole)
	if err := os.WriteFile(console, make([]byte, consoleMaxBytes+4096), 0o600); err != nil {
		t.Fatal(err)
	}
	running(t, d, &vm, fakeFirecracker(t, d, &vm, "read x"))
	if err := d.store.Close(); err != nil { // any read would fail now
		t.Fatal(err)
	}
	d.sampleStats(context.Background())
	fi, err := os.Stat(console)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() > consoleMaxBytes {
		t.Fatalf("console.log is %d bytes after a sample, want at most %d", fi.Size(), consoleMaxBytes)
	}
}
