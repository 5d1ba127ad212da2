package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"banger/internal/api"
	"banger/internal/store"
)

// The daemon's side of the forward manager: lifecycle hooks, the poll
// loop, vm.ports and the published ports of vm create/set.

func fwdOf(vm *store.VM) fwdVM { return fwdVM{ID: vm.ID, Name: vm.Name, VsockPath: vsockPath(vm)} }

// forwardsUp holds the VM's published forwards once it runs, reporting
// each as a start stage. The caller holds the VM's lock.
func (d *Daemon) forwardsUp(ctx context.Context, vm *store.VM, t0 time.Time) {
	if d.fwd == nil {
		return
	}
	pubs, err := d.store.Published(ctx, vm.ID)
	if err != nil {
		d.log.Warn("reading published ports", "vm", vm.Name, "err", err)
		return
	}
	for _, f := range d.fwd.holdPublished(fwdOf(vm), vm.PID, pubs) {
		d.progress(vm, t0, "forward", fmt.Sprintf("%s -> %s:%d", f.Host(), vm.Name, f.GuestPort))
	}
	for _, f := range d.fwd.list(vm.ID) {
		if f.Error != "" {
			d.progress(vm, t0, "forward", fmt.Sprintf("%s -> %s:%d not held: %s", f.Host(), vm.Name, f.GuestPort, f.Error))
		}
	}
}

// forwardsDown closes the VM's forwards (it stops, exited, is deleted).
func (d *Daemon) forwardsDown(vm *store.VM, why string) {
	if d.fwd != nil {
		d.fwd.closeVM(vm.ID, why)
	}
}

// runForwards polls running VMs' guest listeners until ctx ends, then
// closes every forward.
func (d *Daemon) runForwards(ctx context.Context, wg *sync.WaitGroup) {
	if d.fwd == nil {
		return
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer d.fwd.closeAll()
		t := time.NewTicker(forwardPollInterval)
		defer t.Stop()
		q := &pollQueue{run: func(vm store.VM) {
			defer d.fwd.endPoll(vm.ID)
			d.pollVM(ctx, vm)
		}}
		defer q.wg.Wait()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				d.pollForwards(ctx, q)
			}
		}
	}()
}

// pollForwards closes the forwards of VMs that no longer run and queues a
// poll of each running VM's guest listeners (one not yet polled since the
// last round is skipped by startPoll).
func (d *Daemon) pollForwards(ctx context.Context, q *pollQueue) {
	asOf := time.Now()
	vms, err := d.store.ListVMsWhere(ctx, func(v *store.VM) bool {
		return v.State == api.StateRunning || v.State == api.StatePaused
	})
	if err != nil {
		d.log.Warn("forwards: listing vms", "err", err)
		return
	}
	live := map[string]int{}
	for _, v := range vms {
		if (v.State == api.StateRunning || v.State == api.StatePaused) && v.PID > 0 {
			live[v.ID] = v.PID // a paused VM keeps its forwards
		}
	}
	d.fwd.forget(live, asOf)
	var todo []store.VM
	for _, v := range vms {
		if _, ok := live[v.ID]; !ok || v.State != api.StateRunning || !d.fwd.startPoll(fwdOf(&v), v.PID) {
			continue
		}
		todo = append(todo, v)
	}
	q.add(ctx, todo)
}

// pollWorkers bounds the VMs whose guest listeners are read at once. A
// poll is a short vsock request (up to 2 s for an agent that does not
// answer), so a VM whose agent hangs holds one worker and delays only the
// polls queued behind it.
const pollWorkers = 16

// pollQueue runs queued VM polls on at most pollWorkers goroutines,
// started as polls are queued and ended when the queue is empty. One
// goroutine per VM per second held 1,145 goroutines (11.5 MiB of stacks)
// with 500 running VMs, most of them queued for the store; a pool per
// round still started a goroutine per VM, and rounds that overlapped each
// ran their own pollWorkers: 40,000 goroutines over the 500-VM
// benchmark, 93 alive at once, and how many were ever alive together is what the runtime keeps
// records and stacks for (docs/design.md §4 "Memory after a burst").
type pollQueue struct {
	run func(store.VM)
	wg  sync.WaitGroup

	mu      sync.Mutex
	queue   []store.VM
	workers int
}

// add queues vms and starts workers for them, up to pollWorkers in all.
func (q *pollQueue) add(ctx context.Context, vms []store.VM) {
	if len(vms) == 0 {
		return
	}
	q.mu.Lock()
	q.queue = append(q.queue, vms...)
	n := min(pollWorkers-q.workers, len(q.queue))
	q.workers += n
	q.mu.Unlock()
	q.wg.Add(n)
	for range n {
		go q.work(ctx)
	}
}

// work runs queued polls until the queue is empty. Once ctx ends, what is
// still queued is dropped unrun.
func (q *pollQueue) work(ctx context.Context) {
	defer q.wg.Done()
	for {
		q.mu.Lock()
		if len(q.queue) == 0 || ctx.Err() != nil {
			q.queue = nil // hands back the room a round grew it to
			q.workers--
			q.mu.Unlock()
			return
		}
		vm := q.queue[0]
		q.queue = q.queue[1:]
		q.mu.Unlock()
		q.run(vm)
	}
}

// pollVM reads one VM's guest listeners (with auto_forward only) and,
// under the VM's lock (skipped when an operation holds it) and only while
// the VM still runs the same process, applies them and its published ports.
func (d *Daemon) pollVM(ctx context.Context, vm store.VM) {
	var ls []api.GuestListener
	var note string
	if d.fwd.auto {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		ls, note = d.readListeners(pctx, &vm)
		cancel()
	}
	if d.applyPoll(ctx, vm, ls, note) {
		d.touch(ctx, vm.ID)
	}
}

// touchEvery bounds how often open forwarded connections are recorded as
// use of their VM (for auto_stop_stale_after).
const touchEvery = 10 * time.Second

// applyPoll is pollVM's part under the VM's lock; it reports whether the
// VM's forwards carry connections and its last use is older than touchEvery.
func (d *Daemon) applyPoll(ctx context.Context, vm store.VM, ls []api.GuestListener, note string) bool {
	unlock, ok := d.locks.tryLock(vm.ID)
	if !ok {
		return false
	}
	defer unlock()
	cur, err := d.store.GetVM(ctx, vm.ID)
	if err != nil || cur.State != api.StateRunning || cur.PID != vm.PID {
		return false
	}
	pubs, err := d.store.Published(ctx, vm.ID)
	if err != nil {
		d.log.Warn("forwards: reading published ports", "vm", vm.Name, "err", err)
		return false
	}
	d.fwd.holdPublished(fwdOf(&cur), cur.PID, pubs)
	if d.fwd.auto {
		d.fwd.applyListeners(fwdOf(&cur), cur.PID, ls, note)
	}
	conns := 0
	for _, f := range d.fwd.list(vm.ID) {
		conns += f.Conns
	}
	return conns > 0 && time.Since(cur.LastUsedAt) > touchEvery
}

// readListeners asks the VM's agent for its listeners; note is set when it
// cannot say.
func (d *Daemon) readListeners(ctx context.Context, vm *store.VM) ([]api.GuestListener, string) {
	ls, err := d.fwd.back.listeners(ctx, fwdOf(vm))
	switch {
	case errors.Is(err, errOldAgent):
		return nil, oldAgentMessage(d.imageName(ctx, vm), "port listing or forwarding")
	case err != nil:
		return nil, fmt.Sprintf("the agent in vm %s does not answer: %v", vm.Name, err)
	}
	return ls, ""
}

func (d *Daemon) imageName(ctx context.Context, vm *store.VM) string {
	if img, err := d.store.GetImage(ctx, vm.ImageID); err == nil {
		return img.Name
	}
	return vm.ImageID
}

// rpcPorts is vm.ports: the guest's listeners, read now, and the forwards
// held for them, plus published ports that are not held.
func (d *Daemon) rpcPorts(ctx context.Context, raw json.RawMessage) (any, error) {
	var p api.VMRef
	if err := decodeParams(api.MethodVMPorts, raw, &p); err != nil {
		return nil, err
	}
	vm, err := d.resolve(ctx, p.Ref)
	if err != nil {
		return nil, err
	}
	out := api.VMPorts{VM: vm.Name, State: vm.State, AutoForward: d.cfg.AutoForward, Listeners: []api.GuestListener{}, Forwards: []api.Forward{}}
	if vm.State == api.StateRunning {
		lctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		ls, note := d.readListeners(lctx, &vm)
		cancel()
		out.Note = note
		if ls != nil {
			out.Listeners = ls
		}
	} else {
		out.Note = fmt.Sprintf("vm %s is %s; its ports are forwarded while it runs", vm.Name, vm.State)
	}
	if d.fwd != nil {
		out.Forwards = append(out.Forwards, d.fwd.list(vm.ID)...)
	}
	pubs, err := d.store.Published(ctx, vm.ID)
	if err != nil {
		return nil, fmt.Errorf("reading published ports of vm %s: %w", vm.Name, err)
	}
	for _, pub := range pubs {
		held := false
		for _, f := range out.Forwards {
			if f.Kind == api.ForwardPublished && f.HostAddr == pub.HostAddr && f.GuestPort == pub.GuestPort &&
				(f.HostPort == pub.HostPort || f.Requested == pub.HostPort) {
				held = true
			}
		}
		if !held {
			why := "not held yet"
			if vm.State != api.StateRunning {
				why = "vm is " + vm.State
			}
			out.Forwards = append(out.Forwards, api.Forward{Kind: api.ForwardPublished, HostAddr: pub.HostAddr,
				Requested: pub.HostPort, GuestPort: pub.GuestPort, Error: why})
		}
	}
	return out, nil
}

// parsePublished validates --publish specs for vmID; the host address
// defaults to 127.0.0.1.
func parsePublished(vmID string, specs []string) ([]store.Published, error) {
	var out []store.Published
	for _, s := range specs {
		ps, err := api.ParsePublish(s)
		if err != nil {
			return nil, invalidf("%v", err)
		}
		if ps.HostAddr == "" {
			ps.HostAddr = "127.0.0.1"
		}
		out = append(out, store.Published{VMID: vmID, HostAddr: ps.HostAddr, HostPort: ps.HostPort, GuestPort: ps.GuestPort})
	}
	return out, nil
}

// publishTx records pubs in tx; a port another VM holds is a conflict
// naming it.
func publishTx(tx *store.Tx, pubs []store.Published) error {
	for _, p := range pubs {
		if err := tx.Publish(p); err != nil {
			if errors.Is(err, store.ErrConflict) {
				return &publishConflict{err}
			}
			return err
		}
	}
	return nil
}

// publishConflict is a taken published port, told apart from a taken name.
type publishConflict struct{ err error }

func (e *publishConflict) Error() string {
	return e.err.Error() + "; pick another host port, or unpublish it there first"
}
func (e *publishConflict) Unwrap() error { return ErrConflict }

// setPublished applies vm set's --publish and --unpublish in one write and
// returns how to undo it. Checked before the write: nothing changes when a
// spec is bad or a port is taken.
func (d *Daemon) setPublished(ctx context.Context, vm *store.VM, add, remove []string) (func(context.Context) error, error) {
	pubs, err := parsePublished(vm.ID, add)
	if err != nil {
		return nil, err
	}
	type unpub struct {
		addr string
		port int
	}
	var drops []unpub
	for _, s := range remove {
		addr, port, err := api.ParseUnpublish(s)
		if err != nil {
			return nil, invalidf("%v", err)
		}
		drops = append(drops, unpub{addr, port})
	}
	var gone []store.Published
	err = d.store.Write(ctx, func(tx *store.Tx) error {
		for _, u := range drops {
			g, err := tx.Unpublish(vm.ID, u.addr, u.port)
			if errors.Is(err, store.ErrNotFound) {
				return invalidf("%v by vm %s; see `banger vm ports %s`", err, vm.Name, vm.Name)
			} else if err != nil {
				return err
			}
			gone = append(gone, g...)
		}
		return publishTx(tx, pubs)
	})
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) error {
		return d.store.Write(ctx, func(tx *store.Tx) error {
			for _, p := range pubs {
				if _, err := tx.Unpublish(p.VMID, p.HostAddr, p.HostPort); err != nil && !errors.Is(err, store.ErrNotFound) {
					return err
				}
			}
			for _, p := range gone {
				if err := tx.Publish(p); err != nil {
					return err
				}
			}
			return nil
		})
	}, nil
}
