package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"banger/internal/api"
	"banger/internal/storage"
	"banger/internal/store"
)

// init wires runtime pieces and reconciles before the socket serves.
func (d *Daemon) init(ctx context.Context) error {
	d.net = &netState{}
	d.stats = newStatsState()
	d.taps = newTapPool()
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
		SeedDir: d.paths.StateDir + "/seeds",
		Record: func(ctx context.Context, vmID string, st store.StorageState) error {
			return d.store.SetStorage(ctx, vmID, st)
		},
	})
	if err != nil {
		return fmt.Errorf("setting up storage: %w", err)
	}
	d.storage = sm
	d.initDNS()
	d.listenOnBridge()
	if d.vms, err = newRuntimeState(); err != nil {
		return fmt.Errorf("watching firecracker processes: %w", err)
	}
	d.reconcile(ctx)
	return nil
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
	if d.cfg.AutoStopStaleAfter > 0 {
		every(min(d.cfg.AutoStopStaleAfter/4+time.Second, time.Minute), d.stopStale)
	}
}

func (d *Daemon) shutdownRuntime() {
	d.vms.close()
	if d.net != nil && d.net.server != nil {
		d.net.server.Close()
	}
}

// reconcile makes the store agree with the host: running VMs whose process
// is gone are cleaned up, live ones adopted, half-done storage finished or
// undone, and DNS rebuilt from running VMs.
func (d *Daemon) reconcile(ctx context.Context) {
	vms, err := d.store.ListVMs(ctx)
	if err != nil {
		d.log.Error("reconcile: listing vms", "err", err)
		return
	}
	records := map[string]netip.Addr{}
	for _, v := range vms {
		unlock, ok := d.locks.tryLock(v.ID)
		if !ok {
			if v.State == api.StateRunning {
				records[v.Name] = v.IP
			}
			continue // an operation is under way; it owns the VM
		}
		vm, err := d.store.GetVM(ctx, v.ID)
		if err != nil {
			unlock()
			continue
		}
		d.reconcileOne(ctx, &vm)
		if vm.State == api.StateRunning {
			records[vm.Name] = vm.IP
		}
		unlock()
	}
	if d.net.records != nil {
		d.net.records.Replace(records)
	}
}

func (d *Daemon) reconcileOne(ctx context.Context, vm *store.VM) {
	switch vm.State {
	case api.StateRunning, api.StateStarting, api.StateStopping:
		if d.settleWatched(ctx, vm) {
			return
		}
		pid := livePID(vm)
		if pid > 0 {
			if vm.State != api.StateRunning {
				// A half-done start or stop: finish it as a stop.
				d.log.Info("reconcile: finishing interrupted operation", "vm", vm.Name, "state", vm.State)
				if err := d.stopLocked(ctx, vm, "interrupted "+vm.State+" finished by reconcile"); err != nil {
					d.log.Warn("reconcile: stop", "vm", vm.Name, "err", err)
				}
				return
			}
			if pr := d.vms.get(vm.ID); pr == nil || pr.pid != pid {
				d.log.Info("reconcile: adopted running vm", "vm", vm.Name, "pid", pid)
				d.watchAdopted(vm, pid)
				if vm.PID != pid {
					vm.PID = pid
					d.saveVM(ctx, vm)
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
		if vm.Storage.Phase != "" && vm.Storage.Phase != "down" {
			img, err := d.store.GetImage(ctx, vm.ImageID)
			if err != nil {
				return
			}
			st, err := d.storage.Recover(ctx, d.disk(vm, img))
			vm.Storage = st
			if err != nil {
				d.log.Warn("reconcile: storage recovery", "vm", vm.Name, "err", err)
				return
			}
			if err := d.store.SetStorage(ctx, vm.ID, st); err != nil {
				d.log.Warn("reconcile: recording storage", "vm", vm.Name, "err", err)
			}
		}
	}
}
