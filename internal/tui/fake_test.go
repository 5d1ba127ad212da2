package tui

import (
	"context"
	"fmt"
	"sync"
	"time"

	"banger/internal/api"
)

// fakeDaemon is a stateful in-memory bangerd: actions change its VMs and
// publish the same events the real daemon does.
type fakeDaemon struct {
	mu     sync.Mutex
	vms    map[string]api.VM
	stats  map[string]api.Stats
	calls  []string
	subs   []chan api.Event
	nextID int
	now    time.Time
	fail   map[string]error // method -> error to return
}

func newFake(now time.Time, vms ...api.VM) *fakeDaemon {
	f := &fakeDaemon{vms: map[string]api.VM{}, stats: map[string]api.Stats{}, now: now, fail: map[string]error{}, nextID: 0xc0ffee00}
	for _, v := range vms {
		f.vms[v.ID] = v
		if v.State == api.StateRunning {
			f.stats[v.ID] = api.Stats{VM: v.ID, Name: v.Name, State: v.State, PID: v.PID, CPUPercent: 1.5 * float64(v.VCPU), RSSBytes: int64(v.MemoryMiB) << 19}
		}
	}
	return f
}

func (f *fakeDaemon) record(format string, args ...any) {
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
}

// Calls returns the calls made so far.
func (f *fakeDaemon) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeDaemon) publish(ev api.Event) {
	ev.Time = f.now
	for _, ch := range f.subs {
		ch <- ev
	}
}

func (f *fakeDaemon) ListVMs(ctx context.Context) ([]api.VM, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("vm.list")
	var out []api.VM
	for _, v := range f.vms {
		out = append(out, v)
	}
	return out, nil
}

func (f *fakeDaemon) Stats(ctx context.Context) ([]api.Stats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("vm.stats")
	var out []api.Stats
	for _, s := range f.stats {
		out = append(out, s)
	}
	return out, nil
}

func (f *fakeDaemon) Health(ctx context.Context, id string) (api.Health, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("vm.health %s", id)
	v, ok := f.vms[id]
	if !ok {
		return api.Health{}, &api.Error{Message: "no vm " + id, Data: api.ErrorData{Kind: api.KindNotFound}}
	}
	if v.State != api.StateRunning {
		return api.Health{VM: v.Name, State: v.State, Reason: "not running"}, nil
	}
	return api.Health{VM: v.Name, State: v.State, Healthy: true, RTTMillis: 1.2}, nil
}

func (f *fakeDaemon) Action(ctx context.Context, method, id string) (api.VMResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("%s %s", method, id)
	if err := f.fail[method]; err != nil {
		return api.VMResult{}, err
	}
	v, ok := f.vms[id]
	if !ok {
		return api.VMResult{}, &api.Error{Message: "no vm " + id, Data: api.ErrorData{Kind: api.KindNotFound}}
	}
	switch method {
	case api.MethodVMStart, api.MethodVMRestart:
		v.State, v.PID, v.StartedAt = api.StateRunning, 4242, f.now
	case api.MethodVMStop, api.MethodVMKill:
		v.State, v.PID = api.StateStopped, 0
		delete(f.stats, id)
	case api.MethodVMDelete:
		delete(f.vms, id)
		delete(f.stats, id)
		f.publish(api.Event{Kind: api.EventVMDeleted, VMID: id, VM: &v})
		return api.VMResult{VM: v}, nil
	default:
		return api.VMResult{}, fmt.Errorf("fake: no method %s", method)
	}
	f.vms[id] = v
	f.publish(api.Event{Kind: api.EventVMState, VMID: id, VM: &v})
	res := api.VMResult{VM: v}
	if v.State == api.StateRunning {
		res.Health = &api.Health{VM: v.Name, State: v.State, Healthy: true, RTTMillis: 0.9}
	}
	return res, nil
}

func (f *fakeDaemon) SetNAT(ctx context.Context, id string, on bool) (api.VMResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("vm.set %s nat=%v", id, on)
	v, ok := f.vms[id]
	if !ok {
		return api.VMResult{}, &api.Error{Message: "no vm " + id}
	}
	v.NAT = on
	f.vms[id] = v
	f.publish(api.Event{Kind: api.EventVMState, VMID: id, VM: &v})
	return api.VMResult{VM: v}, nil
}

func (f *fakeDaemon) Create(ctx context.Context, p api.VMCreateParams) (api.VMResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	vcpu, mem := 1, 1024
	if p.VCPU != nil {
		vcpu = *p.VCPU
	}
	if p.MemoryMiB != nil {
		mem = *p.MemoryMiB
	}
	f.record("vm.create name=%s image=%s vcpu=%d mem=%d", p.Name, p.Image, vcpu, mem)
	if err := f.fail[api.MethodVMCreate]; err != nil {
		return api.VMResult{}, err
	}
	f.nextID++
	img := p.Image
	if img == "" {
		img = "debian"
	}
	v := api.VM{ID: fmt.Sprintf("%08x", f.nextID), Name: p.Name, State: api.StateRunning, Image: img, VCPU: vcpu, MemoryMiB: mem,
		IP: "172.16.0.9", DNSName: p.Name + ".vm", PID: 5151, CID: 9, StartedAt: f.now, CreatedAt: f.now}
	f.publish(api.Event{Kind: api.EventVMProgress, VMID: v.ID, VM: &v, Stage: "storage", Message: "root and work disks ready", Elapsed: 0.2})
	f.vms[v.ID] = v
	f.publish(api.Event{Kind: api.EventVMState, VMID: v.ID, VM: &v})
	return api.VMResult{VM: v, Health: &api.Health{VM: v.Name, State: v.State, Healthy: true, RTTMillis: 1}}, nil
}

func (f *fakeDaemon) Events(ctx context.Context) (<-chan api.Event, func() error, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("events")
	in := make(chan api.Event, 64)
	f.subs = append(f.subs, in)
	out := make(chan api.Event)
	go func() {
		defer close(out)
		for {
			select {
			case ev := <-in:
				select {
				case out <- ev:
				case <-ctx.Done():
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, func() error { return nil }, nil
}

// emit publishes a state change from outside (as another client would).
func (f *fakeDaemon) emit(v api.VM) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.vms[v.ID] = v
	f.publish(api.Event{Kind: api.EventVMState, VMID: v.ID, VM: &v})
}
