package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/network"
	"banger/internal/store"
)

// idleEvery is how often idle VMs are looked for: a quarter of the window
// (plus a second), at most a minute.
func idleEvery(window time.Duration) time.Duration {
	return min(window/4+time.Second, time.Minute)
}

// idleCheck applies idle_action to running VMs idle for idle_after (or
// auto_stop_stale_after, its older form that stops): no SSH logins
// reported by the agent, no tap traffic and no use through banger (vm ssh,
// vm exec, vm health touch LastUsedAt) for the whole window. The daemon's
// own health checks go over vsock, not the tap, so they never count as use.
func (d *Daemon) idleCheck(ctx context.Context) {
	action, window := d.cfg.Idle()
	if action == config.IdleNone {
		return
	}
	key := "idle_after"
	if d.cfg.IdleAfter == 0 {
		key = "auto_stop_stale_after"
	}
	vms, err := d.store.ListVMsWhere(ctx, func(v *store.VM) bool { return v.State == api.StateRunning })
	if err != nil {
		return
	}
	for _, v := range vms {
		idle, ok := d.idleFor(ctx, &v)
		if !ok || idle < window {
			continue
		}
		reason := fmt.Sprintf("idle for %s (%s)", idle.Round(time.Second), key)
		switch action {
		case config.IdleStop:
			d.stopIdle(ctx, v.ID, idle, reason)
		case config.IdleSuspend:
			d.suspendIdle(ctx, v, idle, reason)
		}
		d.stats.mu.Lock()
		delete(d.stats.active, v.ID)
		d.stats.mu.Unlock()
	}
}

// idleFor updates the VM's activity bookkeeping and returns how long it
// has shown no use; ok is false when its tap cannot be read.
func (d *Daemon) idleFor(ctx context.Context, v *store.VM) (time.Duration, bool) {
	rx, tx, err := network.TapCounters(v.Tap)
	if err != nil {
		return 0, false
	}
	busy := false
	if info, err := agentClient(v).Info(ctx); err == nil && info.SSHLogins > 0 {
		busy = true
	}
	now := time.Now()
	d.stats.mu.Lock()
	defer d.stats.mu.Unlock()
	a, ok := d.stats.active[v.ID]
	if !ok || busy || a.rx != rx || a.tx != tx || v.LastUsedAt.After(a.since) {
		since := now
		if !ok && v.LastUsedAt.After(v.StartedAt) {
			since = v.LastUsedAt
		}
		a = activity{rx: rx, tx: tx, since: since}
	}
	d.stats.active[v.ID] = a
	return now.Sub(a.since), true
}

func (d *Daemon) stopIdle(ctx context.Context, id string, idle time.Duration, reason string) {
	unlock, ok := d.locks.tryLock(id)
	if !ok {
		return
	}
	defer unlock()
	vm, err := d.store.GetVM(ctx, id)
	if err != nil || vm.State != api.StateRunning {
		return
	}
	d.log.Info("stopping idle vm", "vm", vm.Name, "idle", idle.Round(time.Second).String())
	if err := d.stopLocked(ctx, &vm, reason); err != nil {
		d.log.Warn("stopping idle vm", "vm", vm.Name, "err", err)
	}
}

// suspendIdle suspends an idle VM (suspendVM takes its lock and checks it
// still runs) and keeps its name published, asleep, so a DNS query wakes it.
func (d *Daemon) suspendIdle(ctx context.Context, v store.VM, idle time.Duration, reason string) {
	d.log.Info("suspending idle vm", "vm", v.Name, "idle", idle.Round(time.Second).String())
	if err := d.suspendVM(ctx, v.ID, reason); err != nil {
		d.log.Warn("suspending idle vm", "vm", v.Name, "err", err)
		return
	}
	d.publishAsleep(ctx, v.ID) // watchSleepers does too; this one cannot be dropped
}

// sleeping reports whether a VM in state is one that wake brings back
// (its name stays published, marked asleep).
func sleeping(state string) bool {
	return state == api.StateSuspended || state == api.StatePaused
}

// publishAsleep publishes a suspended or paused VM's name marked asleep,
// so that a query for it wakes the VM.
func (d *Daemon) publishAsleep(ctx context.Context, id string) {
	if d.net.records == nil {
		return
	}
	vm, err := d.store.GetVM(ctx, id)
	if err == nil && sleeping(vm.State) && vm.IP.IsValid() {
		d.net.records.SetAsleep(vm.Name, vm.IP)
	}
}

// wakeForUse wakes a suspended or paused VM before a use of it (vm exec,
// vm ssh, a DNS query) and returns it as it is afterwards; a VM in any
// other state is returned as it is. The wake counts as use.
func (d *Daemon) wakeForUse(ctx context.Context, vm store.VM) (store.VM, error) {
	if !sleeping(vm.State) {
		return vm, nil
	}
	t0 := time.Now()
	if err := d.wake(ctx, vm.ID); err != nil {
		return vm, fmt.Errorf("waking vm %s: %w", vm.Name, err)
	}
	cur, err := d.store.GetVM(ctx, vm.ID)
	if err != nil {
		return vm, err
	}
	if cur.State == api.StateRunning && d.net.records != nil && cur.IP.IsValid() {
		d.net.records.Set(cur.Name, cur.IP)
	}
	d.log.Info("woke vm for use", "vm", cur.Name, "took", time.Since(t0).Round(time.Millisecond).String())
	d.touch(ctx, cur.ID)
	return cur, nil
}

// wakeForConnection wakes the VM id when it sleeps, for a connection to one
// of its forwards; a running VM costs one store read.
func (d *Daemon) wakeForConnection(ctx context.Context, id string) error {
	vm, err := d.store.GetVM(ctx, id)
	if err != nil {
		return fmt.Errorf("reading vm %s for a forwarded connection: %w", id, err)
	}
	if !sleeping(vm.State) {
		return nil
	}
	_, err = d.wakeForUse(ctx, vm)
	return err
}

// wakeByName is the DNS server's WakeFunc.
func (d *Daemon) wakeByName(ctx context.Context, name string) error {
	vm, err := d.store.GetVMByName(ctx, name)
	if err != nil {
		return err
	}
	_, err = d.wakeForUse(ctx, vm)
	return err
}

// dnsRecords is what DNS publishes for vms: running VMs' names awake,
// suspended and paused VMs' names asleep.
func dnsRecords(vms []store.VM) (map[string]netip.Addr, map[string]bool) {
	records := map[string]netip.Addr{}
	asleep := map[string]bool{}
	for _, v := range vms {
		switch {
		case !v.IP.IsValid():
		case v.State == api.StateRunning:
			records[v.Name] = v.IP
		case sleeping(v.State):
			records[v.Name] = v.IP
			asleep[v.Name] = true
		}
	}
	return records, asleep
}

// wakeRef wakes the VM a {"ref":...} request names when it sleeps; an
// unknown ref is left for the caller to report.
func (d *Daemon) wakeRef(ctx context.Context, method string, raw json.RawMessage) error {
	var p api.VMRef
	if err := decodeParams(method, raw, &p); err != nil {
		return err
	}
	vm, err := d.resolve(ctx, p.Ref)
	if err != nil || !sleeping(vm.State) {
		return nil
	}
	_, err = d.wakeForUse(ctx, vm)
	return err
}

// dnsWakeWait is how long a DNS query for a sleeping VM waits for the VM
// to be back before it is answered anyway: below the 5 s a resolver
// (glibc, systemd-resolved) waits before it retries or gives up, and well
// above a resume (see docs/design.md, Idle).
const dnsWakeWait = 3 * time.Second

// watchSleepers keeps the names of VMs that fall asleep published: a
// suspend tears the VM's host side down (its DNS name included) and a
// pause leaves the name awake, so on every state event saying suspended
// or paused the name is published again, marked asleep, for a query to
// wake it. (Events can be dropped under load; rebuildDNS catches up.)
func (d *Daemon) watchSleepers(ctx context.Context, wg *sync.WaitGroup) {
	if d.net.records == nil {
		return
	}
	ch, cancel := d.events.subscribe()
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer cancel()
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-ch:
				if !ok {
					return
				}
				if ev.Kind == api.EventVMState && ev.VM != nil && sleeping(ev.VM.State) {
					d.publishAsleep(context.WithoutCancel(ctx), ev.VMID)
				}
			}
		}
	}()
}
