package daemon

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"banger/internal/api"
	"banger/internal/firecracker"
	"banger/internal/procwatch"
	"banger/internal/store"
)

// proc is one watched Firecracker process. Its pidfd (in the one watcher
// every VM shares) does the waiting and the signalling.
type proc struct {
	p    *procwatch.Proc
	pid  int
	done <-chan struct{}
	logs []firecracker.LogMark // firecracker.log and console.log from where they ended at launch
	// console is the VM's console.log, which the stats loop caps (the VM's
	// directory does not change while it runs).
	console string

	// recorded is set once the exit has been dealt with: written to the
	// store with its reason (onExit, reconcile) or made moot by an operation
	// that stopped the VM under its lock (teardown forgets the process).
	recorded atomic.Bool

	reasonOnce sync.Once
	why        string
}

func vmLogs(vm *store.VM) []string {
	return []string{filepath.Join(vm.Dir, fileFCLog), filepath.Join(vm.Dir, fileConsole)}
}

// wholeLogs marks the start of the VM's logs.
func wholeLogs(vm *store.VM) []firecracker.LogMark {
	var marks []firecracker.LogMark
	for _, p := range vmLogs(vm) {
		marks = append(marks, firecracker.LogMark{Path: p})
	}
	return marks
}

// newProc wraps p; its exit reason quotes the logs from logs' marks.
func newProc(p *procwatch.Proc, logs []firecracker.LogMark) *proc {
	return &proc{p: p, pid: p.Pid(), done: p.Done(), logs: logs}
}

// exited reports whether the process has ended.
func (pr *proc) exited() bool {
	select {
	case <-pr.done:
		return true
	default:
		return false
	}
}

// status says how the process ended, without log lines:
// "firecracker crashed (exit status 1)".
func (pr *proc) status() string {
	st := pr.p.Status()
	switch {
	case !st.Known:
		return "firecracker exited (adopted process; exit status unknown)"
	case st.Signal != 0:
		return "firecracker killed by signal " + procwatch.SignalName(st.Signal)
	case st.Code == 0:
		return "guest shut down (firecracker exited 0)"
	default:
		return fmt.Sprintf("firecracker crashed (exit status %d)", st.Code)
	}
}

// abnormal reports an exit not known to be a clean guest shutdown.
func (pr *proc) abnormal() bool { return !pr.p.Status().Clean() }

// reason is status plus, for an abnormal exit, the last error lines of
// Firecracker's log and of the console, on one line. It is read once, after
// the exit, so every caller reports the same text.
func (pr *proc) reason() string {
	if !pr.exited() {
		return ""
	}
	pr.reasonOnce.Do(func() {
		pr.why = pr.status()
		if pr.abnormal() {
			pr.why += firecracker.SummarySince(pr.logs)
		}
	})
	return pr.why
}

// runtimeState tracks the Firecracker processes the daemon watches.
type runtimeState struct {
	w     *procwatch.Watcher
	mu    sync.Mutex
	procs map[string]*proc

	// The memory trim (memtrim.go), run trimAfter after the last VM
	// operation or exit of a burst.
	trimFn      func()
	trim        *time.Timer
	trimPending bool
	trimSince   time.Time // when the pending trim was first asked for
}

// trimSoon schedules the trim trimAfter from now, pushing back one already
// pending (so a burst costs one trim) for at most trimMaxDelay.
func (r *runtimeState) trimSoon() {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.trimFn == nil {
		return
	}
	now := time.Now()
	switch {
	case r.trim == nil:
		r.trim = time.AfterFunc(trimAfter, r.runTrim)
	case !r.trimPending:
		r.trim.Reset(trimAfter)
	case now.Sub(r.trimSince) < trimMaxDelay:
		r.trim.Reset(trimAfter)
		return
	default:
		return
	}
	r.trimPending, r.trimSince = true, now
}

func (r *runtimeState) runTrim() {
	r.mu.Lock()
	r.trimPending = false
	fn := r.trimFn
	r.mu.Unlock()
	if fn != nil {
		fn()
	}
}

func newRuntimeState(trim func()) (*runtimeState, error) {
	w, err := procwatch.New()
	if err != nil {
		return nil, err
	}
	return &runtimeState{w: w, procs: map[string]*proc{}, trimFn: trim}, nil
}

// close stops watching; the VMs keep running. It waits for exit handlers
// under way, so it must come before the store closes.
func (r *runtimeState) close() {
	if r != nil {
		_ = r.w.Close()
		r.mu.Lock()
		r.trimFn = nil // no trim is scheduled after this
		if r.trim != nil {
			r.trim.Stop()
		}
		r.mu.Unlock()
	}
}

func (r *runtimeState) get(id string) *proc {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.procs[id]
}

func (r *runtimeState) set(id string, p *proc) {
	r.mu.Lock()
	r.procs[id] = p
	r.mu.Unlock()
}

// forget drops the VM's process (p, or whichever when p is nil): the
// caller, holding the VM's lock, has dealt with its exit.
func (r *runtimeState) forget(id string, p *proc) {
	r.mu.Lock()
	cur, ok := r.procs[id]
	ok = ok && (p == nil || cur == p)
	if ok {
		cur.recorded.Store(true)
		delete(r.procs, id)
	}
	r.mu.Unlock()
	if ok {
		r.trimSoon()
	}
}

func (r *runtimeState) all() map[string]*proc {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]*proc, len(r.procs))
	for k, v := range r.procs {
		out[k] = v
	}
	return out
}

// launch starts the VM's Firecracker, makes it the VM's watched process and
// has its exit handled. Its exit reason quotes only the log lines written
// after the launch.
func (d *Daemon) launch(ctx context.Context, vm *store.VM, spec firecracker.LaunchSpec) (*proc, error) {
	marks := firecracker.MarkLogs(vmLogs(vm)...)
	p, err := firecracker.Launch(ctx, d.vms.w, spec)
	if err != nil {
		return nil, err
	}
	return d.watch(vm, p, marks), nil
}

// watch makes p the VM's process and has its exit handled.
func (d *Daemon) watch(vm *store.VM, p *procwatch.Proc, logs []firecracker.LogMark) *proc {
	pr := newProc(p, logs)
	pr.console = filepath.Join(vm.Dir, fileConsole)
	id := vm.ID
	d.vms.set(id, pr)
	p.Notify(func(*procwatch.Proc) { d.onExit(id, pr) })
	return pr
}

// watchAdopted watches pid, a Firecracker started by an earlier daemon,
// after checking (with its pidfd held) that it serves the VM's API socket.
// A process that is gone by then, or that turns out not to be the VM's,
// counts as exited: the returned proc is already done and its exit is
// recorded once the caller releases the VM's lock. It never returns nil.
func (d *Daemon) watchAdopted(vm *store.VM, pid int) *proc {
	p, err := firecracker.Adopt(d.vms.w, pid, apiSock(vm))
	if err != nil {
		d.log.Info("firecracker gone before it could be adopted", "vm", vm.Name, "pid", pid, "err", err)
		p = d.vms.w.Gone(pid)
	}
	return d.watch(vm, p, wholeLogs(vm)) // when it started, and so where its lines begin, is unknown
}

// procOf returns the watched process of the VM if its pid is pid, else
// adopts pid after checking it is the VM's Firecracker.
func (d *Daemon) procOf(vm *store.VM, pid int) *proc {
	if pr := d.vms.get(vm.ID); pr != nil && pr.pid == pid {
		return pr
	}
	return d.watchAdopted(vm, pid)
}

// onExit records the exit of a VM's process that nobody under the VM's lock
// has dealt with (a crash, a guest shutdown). It runs on its own goroutine
// per exit; the watcher's Close waits for it.
func (d *Daemon) onExit(vmID string, pr *proc) {
	if pr.recorded.Load() {
		return
	}
	unlock := d.locks.lock(vmID)
	defer unlock()
	if pr.recorded.Load() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	vm, err := d.store.GetVM(ctx, vmID)
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			d.log.Error("recording firecracker exit: loading vm", "vm", vmID, "pid", pr.pid, "reason", pr.reason(), "err", err)
		}
		d.vms.forget(vmID, pr)
		return
	}
	d.recordExit(ctx, &vm, pr)
}

// settleWatched answers for reconcile (which holds the VM's lock) about a
// VM whose process the daemon watches: if it exited, its exit is recorded
// here with its real reason; if it runs, there is nothing to reconcile. It
// returns false when the watcher does not know the VM's process, so that
// reconcile looks at /proc itself.
func (d *Daemon) settleWatched(ctx context.Context, vm *store.VM) bool {
	pr := d.vms.get(vm.ID)
	if pr == nil || pr.pid != vm.PID {
		return false
	}
	if pr.exited() {
		d.recordExit(ctx, vm, pr)
		return true
	}
	return vm.State == api.StateRunning || vm.State == api.StatePaused
}

// recordExit writes a process exit to the store, once, with its reason, and
// releases the VM's host resources. The caller holds the VM's lock.
func (d *Daemon) recordExit(ctx context.Context, vm *store.VM, pr *proc) {
	if !pr.recorded.CompareAndSwap(false, true) {
		return
	}
	defer d.vms.forget(vm.ID, pr)
	if vm.PID != pr.pid || !live(vm.State) {
		return // the VM moved on (stopped, restarted) under its lock
	}
	reason := pr.reason()
	d.log.Info("firecracker exited on its own", "vm", vm.Name, "pid", pr.pid, "reason", reason)
	if err := d.teardown(ctx, vm); err != nil {
		d.log.Warn("cleanup after exit", "vm", vm.Name, "err", err)
	}
	vm.State = api.StateStopped
	vm.StopReason = reason
	if st := pr.p.Status(); st.Known && !st.Clean() {
		vm.LastError = reason // a crash; an adopted process's exit may have been a clean one
	}
	vm.PID = 0
	if err := d.saveVM(ctx, vm); err != nil {
		// The row still says live; the next reconcile finds the process
		// gone and records the stop then.
		d.log.Error("recording a firecracker exit", "vm", vm.Name, "pid", pr.pid, "err", err)
	}
}

func live(state string) bool {
	switch state {
	case api.StateRunning, api.StateStarting, api.StateStopping, api.StatePaused:
		return true
	}
	return false
}

// exitNotWatched is the reason for a VM whose process ended while no daemon
// watched it, with the last error lines of its logs.
func exitNotWatched(vm *store.VM, what string) string {
	return what + firecracker.LogSummary(vmLogs(vm)...)
}

// wait waits up to timeout for the process to end.
func (pr *proc) wait(ctx context.Context, timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	_, err := pr.p.Wait(ctx)
	return err == nil
}

// waitGone waits for pid to end, through the VM's watched process when pid
// is its pid, else through a pidfd held for the wait.
func (d *Daemon) waitGone(ctx context.Context, vmID string, pid int, timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if pr := d.vms.get(vmID); pr != nil && pr.pid == pid {
		select {
		case <-pr.done:
			return true
		case <-ctx.Done():
			return false
		}
	}
	p, err := d.vms.w.Adopt(pid, nil)
	if err != nil {
		return errors.Is(err, procwatch.ErrGone)
	}
	defer p.Release()
	_, err = p.Wait(ctx)
	return err == nil
}
