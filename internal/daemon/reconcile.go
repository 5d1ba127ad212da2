package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/preflight"
	"banger/internal/storage"
	"banger/internal/store"
)

// init wires runtime pieces. Reconcile does not run here: Run serves the
// socket first and finishes interrupted work in the background.
func (d *Daemon) init(ctx context.Context) error {
	d.net = &netState{}
	d.stats = newStatsState()
	d.taps = newTapPool()
	d.fwd = newForwarder(agentForwards{log: d.log, wake: d.wakeForConnection}, d.cfg.AutoForward, d.log, d.events.publish)
	if d.checkTap == nil {
		d.checkTap = tapReady
	}
	if d.host == nil {
		return fmt.Errorf("no privileged host seam configured")
	}
	if err := d.host.EnsureStateDirs(ctx, d.paths.VMsDir, d.paths.ImagesDir); err != nil {
		return fmt.Errorf("preparing state directories: %w", err)
	}
	sm, err := storage.New(storage.Options{
		Driver:  d.cfg.StorageDriver,
		Host:    d.host,
		Log:     d.log,
		SeedDir: d.seedDir(),
		Record: func(ctx context.Context, vmID string, st storage.State) error {
			b, err := st.Encode()
			if err != nil {
				return err
			}
			return d.store.SetStorage(ctx, vmID, b)
		},
	})
	if err != nil {
		return fmt.Errorf("setting up storage: %w", err)
	}
	d.storage = sm
	d.initDNS()
	d.listenOnBridge()
	st := d.store
	keep := keepThreads()
	trim := func() {
		d.compactTables()
		if shed := trimMemory(st, keep); shed > 0 {
			d.log.Debug("memory trimmed", "threads_ended", shed)
		}
	}
	if d.vms, err = newRuntimeState(trim); err != nil {
		return fmt.Errorf("watching firecracker processes: %w", err)
	}
	d.cleanStateDir(ctx)
	return nil
}

func (d *Daemon) seedDir() string { return filepath.Join(d.paths.StateDir, "seeds") }

// cleanStateDir removes what no record names: doctor's probe files, the
// work-disk seeds of images that are gone, and VM directories without a
// VM (none is made before its row, so none belongs to a create under way).
func (d *Daemon) cleanStateDir(ctx context.Context) {
	if n, err := preflight.CleanProbes(d.paths.StateDir); err != nil {
		d.log.Warn("removing leftover doctor probe files", "dir", d.paths.StateDir, "err", err)
	} else if n > 0 {
		d.log.Info("removed leftover doctor probe files", "count", n)
	}
	imgs, err := d.store.ListImages(ctx)
	if err != nil {
		d.log.Error("listing images to prune work-disk seeds", "err", err)
	} else {
		live := map[string]bool{}
		for _, im := range imgs {
			live[im.ID] = true
		}
		n, err := d.storage.PruneSeeds(func(id string) bool { return live[id] })
		if err != nil {
			d.log.Warn("pruning work-disk seeds", "err", err)
		}
		if n > 0 {
			d.log.Info("removed work-disk seeds of deleted images", "count", n)
		}
	}
	ents, err := os.ReadDir(d.paths.VMsDir)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			d.log.Warn("listing vm directories", "dir", d.paths.VMsDir, "err", err)
		}
		return
	}
	vms, err := d.store.ListVMs(ctx)
	if err != nil {
		d.log.Error("listing vms to find orphan directories", "err", err)
		return
	}
	known := map[string]bool{}
	for _, v := range vms {
		known[v.ID] = true
	}
	for _, e := range ents {
		if known[e.Name()] || !e.IsDir() || !store.ValidID(e.Name()) {
			continue
		}
		p := filepath.Join(d.paths.VMsDir, e.Name())
		if err := os.RemoveAll(p); err != nil {
			d.log.Warn("removing a vm directory no vm owns", "dir", p, "err", err)
			continue
		}
		d.log.Info("removed a vm directory no vm owns", "dir", p)
	}
}

// startup is the start-up reconcile: the lock of every VM, taken before the
// socket serves, so commands on a VM wait until its interrupted work is
// finished.
type startup struct {
	vms     []store.VM
	unlocks []func()
}

// lockAll takes every VM's lock and publishes DNS for the VMs recorded
// running, so names answer while reconcile runs.
func (d *Daemon) lockAll(ctx context.Context) *startup {
	s := &startup{}
	vms, err := d.store.ListVMs(ctx)
	if err != nil {
		d.log.Error("reconcile: listing vms", "err", err)
		return s
	}
	for _, v := range vms {
		s.vms = append(s.vms, v)
		s.unlocks = append(s.unlocks, d.locks.lock(v.ID))
	}
	if d.net.records != nil {
		d.net.records.ReplaceAll(dnsRecords(vms))
	}
	return s
}

// runStartup reconciles every VM of s (see reconcileAll), each releasing
// its lock when done, then rebuilds DNS and finishes interrupted image
// work. It does not wait; wg tracks it.
func (d *Daemon) runStartup(ctx context.Context, s *startup, wg *sync.WaitGroup) {
	ctx = context.WithoutCancel(ctx) // a stop under way is finished, not cut short
	t0 := time.Now()
	jobs := make([]reconcileJob, len(s.vms))
	for i := range s.vms {
		jobs[i] = reconcileJob{vm: s.vms[i], unlock: s.unlocks[i]}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		d.reconcileAll(ctx, jobs)
		d.recoverImages(ctx, true)
		d.rebuildDNS(ctx)
		d.log.Info("start-up reconcile done", "vms", len(s.vms), "took", time.Since(t0).Round(time.Millisecond))
		close(d.reconciled)
		// Reading and checking every VM is a burst like any other: an idle
		// daemon would keep its garbage for minutes (memtrim.go).
		d.vms.trimSoon()
	}()
}

// reconcileWorkers bounds how many ordinary VMs are reconciled at once.
// Each one makes blocking system calls (/proc, pidfds, netlink, the
// store), and the Go runtime keeps a thread for every goroutine blocked in
// one and never gives it back: 100 adopted VMs reconciled all at once left
// a daemon with 78 threads for good.
const reconcileWorkers = 4

// reconcileJob is one VM to reconcile and the release of its lock.
type reconcileJob struct {
	vm     store.VM
	unlock func()
}

// reconcileAll reconciles jobs and waits for all of them. A VM with an
// interrupted operation (an intent, or recorded starting or stopping) gets
// a goroutine of its own: finishing a stop may wait out the guest's grace
// period, and no other VM should queue behind it. Those are few; the rest
// (adoption and checks of settled VMs) go through reconcileWorkers.
func (d *Daemon) reconcileAll(ctx context.Context, jobs []reconcileJob) {
	pending := map[string]bool{}
	if ins, err := d.store.ListIntents(ctx); err != nil {
		d.log.Error("reconcile: listing intents", "err", err)
	} else {
		for _, in := range ins {
			pending[in.VMID] = true
		}
	}
	run := func(j reconcileJob) {
		defer j.unlock()
		d.reconcileLocked(ctx, j.vm.ID)
	}
	var wg sync.WaitGroup
	queue := make(chan reconcileJob)
	for range min(reconcileWorkers, len(jobs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range queue {
				run(j)
			}
		}()
	}
	var ordinary []reconcileJob
	for _, j := range jobs {
		if pending[j.vm.ID] || j.vm.State == api.StateStarting || j.vm.State == api.StateStopping {
			wg.Add(1)
			go func() {
				defer wg.Done()
				run(j)
			}()
			continue
		}
		ordinary = append(ordinary, j)
	}
	for _, j := range ordinary {
		queue <- j
	}
	close(queue)
	wg.Wait()
}

func (d *Daemon) startBackground(ctx context.Context, wg *sync.WaitGroup) {
	every := func(interval time.Duration, fn func(context.Context)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(interval)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					fn(ctx)
				}
			}
		}()
	}
	d.runTapPool(ctx, wg)
	every(d.cfg.ReconcileInterval, d.reconcile)
	every(d.cfg.StatsPollInterval, d.sampleStats)
	d.runForwards(ctx, wg)
	d.watchSleepers(ctx, wg)
	if action, window := d.cfg.Idle(); action != config.IdleNone {
		every(idleEvery(window), d.idleCheck)
	}
}

func (d *Daemon) shutdownRuntime() {
	if d.fwd != nil {
		d.fwd.closeAll()
	}
	d.vms.close()
	if d.net != nil && d.net.server != nil {
		d.net.server.Close()
	}
}

// reconcile makes the store agree with the host: interrupted operations
// are finished or undone, running VMs whose process is gone are cleaned
// up, live ones adopted, half-done storage finished or undone, and DNS
// rebuilt from running VMs. VMs whose lock is taken are skipped (their
// operation owns them); the others are reconciled concurrently.
func (d *Daemon) reconcile(ctx context.Context) {
	vms, err := d.store.ListVMs(ctx)
	if err != nil {
		d.log.Error("reconcile: listing vms", "err", err)
		return
	}
	wctx := context.WithoutCancel(ctx)
	var jobs []reconcileJob
	for _, v := range vms {
		unlock, ok := d.locks.tryLock(v.ID)
		if !ok {
			continue // an operation is under way; it owns the VM
		}
		jobs = append(jobs, reconcileJob{vm: v, unlock: unlock})
	}
	d.reconcileAll(wctx, jobs)
	d.recoverImages(wctx, false)
	d.rebuildDNS(wctx)
	if len(vms) > 0 {
		// It read and checked every VM: its garbage would otherwise stay
		// until the next collection, which an idle daemon runs rarely.
		d.vms.trimSoon()
	}
}

// rebuildDNS publishes exactly the VMs recorded running, and suspended or
// paused ones marked asleep (a query for them wakes them). A VM whose lock an
// operation holds keeps what that operation published (a booting VM is
// recorded running before its agent answers, and its start publishes the
// name only once it is healthy, or never when it died during boot).
func (d *Daemon) rebuildDNS(ctx context.Context) {
	if d.net.records == nil {
		return
	}
	vms, err := d.store.ListVMs(ctx)
	if err != nil {
		d.log.Error("reconcile: listing vms for dns", "err", err)
		return
	}
	var current []store.VM
	kept := map[string]netip.Addr{}
	keptAsleep := map[string]bool{}
	for _, v := range vms {
		unlock, ok := d.locks.tryLock(v.ID)
		if !ok {
			if ip, published := d.net.records.LookupName(v.Name); published {
				kept[v.Name] = ip
				keptAsleep[v.Name] = d.net.records.Asleep(v.Name)
			}
			continue
		}
		cur, err := d.store.GetVM(ctx, v.ID) // as of now, under its lock
		unlock()
		if err == nil {
			current = append(current, cur)
		}
	}
	records, asleep := dnsRecords(current)
	for n, ip := range kept {
		records[n], asleep[n] = ip, keptAsleep[n]
	}
	d.net.records.ReplaceAll(records, asleep)
}

// reconcileLocked reconciles one VM; the caller holds its lock.
func (d *Daemon) reconcileLocked(ctx context.Context, id string) {
	vm, err := d.store.GetVM(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return
	}
	if err != nil {
		d.log.Error("reconcile: reading vm", "vm", id, "err", err)
		return
	}
	gone, err := d.recoverIntentsLocked(ctx, &vm)
	if err != nil {
		d.log.Error("reconcile: recovering interrupted operation", "vm", vm.Name, "err", err)
		return
	}
	if !gone {
		d.reconcileOne(ctx, &vm)
	}
}

func (d *Daemon) reconcileOne(ctx context.Context, vm *store.VM) {
	switch vm.State {
	case api.StateRunning, api.StateStarting, api.StateStopping, api.StatePaused:
		if d.settleWatched(ctx, vm) {
			return
		}
		pid := livePID(vm)
		if pid > 0 {
			if vm.State != api.StateRunning && vm.State != api.StatePaused {
				// A start or stop without an intent (recorded by an older
				// build): finish it as a stop.
				d.log.Info("reconcile: finishing interrupted operation", "vm", vm.Name, "state", vm.State)
				if err := d.stopWith(ctx, vm, pid, "interrupted "+vm.State+" finished by reconcile"); err != nil {
					d.log.Warn("reconcile: stop", "vm", vm.Name, "err", err)
				}
				return
			}
			if pr := d.vms.get(vm.ID); pr == nil || pr.pid != pid {
				d.log.Info("reconcile: adopted running vm", "vm", vm.Name, "pid", pid)
				d.watchAdopted(vm, pid)
				d.syncNAT(ctx, vm)
				if vm.PID != pid {
					vm.PID = pid
					if err := d.saveVM(ctx, vm); err != nil {
						d.log.Error("reconcile: recording the pid of an adopted vm", "vm", vm.Name, "pid", pid, "err", err)
					}
				}
			}
			return
		}
		reason := exitNotWatched(vm, "firecracker exited while bangerd was not watching")
		if vm.State == api.StateStarting {
			reason = "start interrupted"
		}
		d.log.Info("reconcile: cleaning up vm whose process is gone", "vm", vm.Name, "state", vm.State)
		vm.State = api.StateStopping
		if err := d.finishStop(ctx, vm, reason); err != nil {
			d.log.Warn("reconcile: cleanup", "vm", vm.Name, "err", err)
		}
	default:
		st, err := vmStorage(vm)
		if err != nil {
			d.log.Error("reconcile: reading storage state", "vm", vm.Name, "err", err)
			return
		}
		if st.Phase == "" && st.RootDisk == "" && vm.StartedAt.IsZero() && (vm.State == api.StateCreated || vm.State == api.StateStopped) {
			// No root disk, never started, no intent: a create an older
			// build left half-done (it records no intents). It can be
			// neither started nor used: undo it as recovery would.
			d.log.Info("reconcile: undoing a create left unfinished by an older bangerd", "vm", vm.Name)
			if err := d.undoCreate(ctx, vm); err != nil {
				d.log.Error("reconcile: undoing unfinished create", "vm", vm.Name, "err", err)
			}
			return
		}
		if st.Phase == "" || st.Phase == storage.PhaseDown {
			return
		}
		disk, err := d.diskOf(ctx, vm)
		if err != nil {
			d.log.Error("reconcile: storage recovery", "vm", vm.Name, "err", err)
			return
		}
		st, err = d.storage.Recover(ctx, disk)
		if serr := setStorage(vm, st); serr != nil && err == nil {
			err = serr
		}
		if err != nil {
			d.log.Warn("reconcile: storage recovery", "vm", vm.Name, "err", err)
			return
		}
		if err := d.store.SetStorage(ctx, vm.ID, vm.Storage); err != nil {
			d.log.Error("reconcile: recording storage", "vm", vm.Name, "err", err)
		}
	}
}

// syncNAT makes an adopted VM's NAT membership match its record: a daemon
// killed during `vm set --nat` may have changed one and not the other.
// Both calls are idempotent.
func (d *Daemon) syncNAT(ctx context.Context, vm *store.VM) {
	var err error
	if vm.NAT {
		if err = d.ensureNAT(ctx); err == nil {
			err = d.host.NATAdd(ctx, vm.IP)
		}
	} else {
		err = d.host.NATRemove(ctx, vm.IP)
	}
	if err != nil {
		d.log.Warn("reconcile: matching nat to the record of an adopted vm", "vm", vm.Name, "nat", vm.NAT, "err", err)
	}
}
