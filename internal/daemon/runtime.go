package daemon

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"banger/internal/firecracker"
)

// proc is one watched Firecracker process.
type proc struct {
	pid      int
	done     chan struct{}
	expected atomic.Bool // an exit we caused (stop, kill, undo)
	status   string      // why it exited, set before done closes
	code     int         // exit code, -1 when unknown or by signal
}

// runtimeState tracks the Firecracker processes the daemon watches.
type runtimeState struct {
	mu    sync.Mutex
	procs map[string]*proc
}

func newRuntimeState() *runtimeState { return &runtimeState{procs: map[string]*proc{}} }

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

func (r *runtimeState) forget(id string, p *proc) {
	r.mu.Lock()
	if cur, ok := r.procs[id]; ok && (p == nil || cur == p) {
		delete(r.procs, id)
	}
	r.mu.Unlock()
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

// watchChild waits for a process this daemon started and reports its exit.
func (d *Daemon) watchChild(vmID string, p *os.Process) *proc {
	pr := &proc{pid: p.Pid, done: make(chan struct{}), code: -1}
	d.vms.set(vmID, pr)
	go func() {
		st, err := p.Wait()
		switch {
		case err != nil:
			pr.status = fmt.Sprintf("firecracker (pid %d) ended: %v", p.Pid, err)
		case st.Exited() && st.ExitCode() == 0:
			pr.code = 0
			pr.status = "guest shut down (firecracker exited 0)"
		case st.Exited():
			pr.code = st.ExitCode()
			pr.status = fmt.Sprintf("firecracker crashed (exit status %d)", st.ExitCode())
		default:
			if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				pr.status = fmt.Sprintf("firecracker killed by signal %s", ws.Signal())
			} else {
				pr.status = "firecracker ended: " + st.String()
			}
		}
		close(pr.done)
		d.onExit(vmID, pr)
	}()
	return pr
}

// watchAdopted waits for a process started by an earlier daemon.
func (d *Daemon) watchAdopted(vmID string, pid int) *proc {
	pr := &proc{pid: pid, done: make(chan struct{}), code: -1}
	d.vms.set(vmID, pr)
	go func() {
		for {
			err := firecracker.WaitExit(context.Background(), pid)
			if err == nil {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		pr.status = "firecracker exited (adopted process; exit status unknown)"
		close(pr.done)
		d.onExit(vmID, pr)
	}()
	return pr
}

// onExit cleans up after a Firecracker process that ended on its own.
func (d *Daemon) onExit(vmID string, pr *proc) {
	if pr.expected.Load() {
		return
	}
	select {
	case <-d.stopping:
		return
	default:
	}
	unlock := d.locks.lock(vmID)
	defer unlock()
	if pr.expected.Load() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	vm, err := d.store.GetVM(ctx, vmID)
	if err != nil || vm.PID != pr.pid {
		return
	}
	d.log.Info("firecracker exited on its own", "vm", vm.Name, "pid", pr.pid, "reason", pr.status)
	if err := d.teardown(ctx, &vm); err != nil {
		d.log.Warn("cleanup after exit", "vm", vm.Name, "err", err)
	}
	vm.State = "stopped"
	vm.StopReason = pr.status
	vm.PID = 0
	d.saveVM(ctx, &vm)
	d.vms.forget(vmID, pr)
}

// waitGone waits for pid to end, preferring the watcher's done channel.
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
	return firecracker.WaitExit(ctx, pid) == nil
}
