package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/firecracker"
	"banger/internal/network"
	"banger/internal/preflight"
	"banger/internal/procwatch"
	"banger/internal/storage"
	"banger/internal/store"
)

const consoleMaxBytes = 8 << 20

func (d *Daemon) preflightStart(ctx context.Context) error {
	rs := preflight.Run(ctx, preflight.Env{Config: d.cfg, Paths: d.paths, Cache: d.checks}, preflight.StartNames()...)
	if err := preflight.Err(rs); err != nil {
		return withKind(ErrUnavailable, "%v", err)
	}
	return nil
}

func (d *Daemon) rpcStart(ctx context.Context, raw json.RawMessage) (any, error) {
	p, vm, unlock, err := lockedParams(ctx, d, api.MethodVMStart, raw, func(p *api.VMStartParams) string { return p.Ref })
	if err != nil {
		return nil, err
	}
	defer unlock()
	res := api.VMResult{}
	if vm.State == api.StatePaused {
		if err := d.resumeLocked(ctx, &vm); err != nil {
			return nil, err
		}
		res.Notices = []string{vm.Name + " was paused; resumed it"}
		res.VM = d.toAPI(ctx, vm)
		return res, nil
	}
	if p.Cold && vm.State == api.StateSuspended {
		n, err := d.discardSnapshotLocked(ctx, &vm, "snapshot discarded by vm start --cold")
		if err != nil {
			return nil, err
		}
		res.Notices = append(res.Notices, n)
	}
	if vm.State == api.StateRunning {
		res.Notices = []string{vm.Name + " is already running"}
		res.VM = d.toAPI(ctx, vm)
		return res, nil
	}
	if err := d.preflightStart(ctx); err != nil {
		return nil, err
	}
	health, notices, err := d.startLocked(ctx, &vm, time.Now())
	if err != nil {
		return nil, err
	}
	res.Health, res.Notices, res.VM = health, append(res.Notices, notices...), d.toAPI(ctx, vm)
	return res, nil
}

// kernelFor picks the image's own kernel, else the configured one.
func (d *Daemon) kernelFor(img store.Image) (kernel, initrd string) {
	if img.KernelPath != "" {
		return img.KernelPath, img.InitrdPath
	}
	return d.cfg.KernelPath, d.cfg.InitrdPath
}

// startLocked boots a VM, or restores a suspended one from its snapshot;
// the caller holds its lock. Host changes are undone in reverse if a step
// fails (a restore that fails leaves the VM suspended with its snapshot). A
// VM that runs but whose agent never answers stays running and is reported
// unhealthy.
func (d *Daemon) startLocked(ctx context.Context, vm *store.VM, t0 time.Time) (*api.Health, []string, error) {
	img, err := d.store.GetImage(ctx, vm.ImageID)
	if err != nil {
		return nil, nil, fmt.Errorf("loading image of vm %s: %w", vm.Name, err)
	}
	var snap *snapshotInfo // restoring from it; nil: a cold boot
	op := opStart
	if vm.State == api.StateSuspended {
		if snap, err = d.checkSnapshot(vm, img); err != nil {
			return nil, nil, err
		}
		op = opRestore
	}
	var notices []string
	prev := *vm
	vm.State = api.StateStarting
	vm.LastError = ""
	vm.StopReason = ""
	in, err := d.begin(ctx, vm, op, nil)
	if err != nil {
		*vm = prev
		return nil, nil, fmt.Errorf("starting vm %s: %w", vm.Name, err)
	}
	rv := newReverter(d.log)
	fail := func(stage string, err error) (*api.Health, []string, error) {
		rv.fail()
		vm.State = api.StateStopped
		if snap != nil {
			vm.State = api.StateSuspended // the snapshot was not used: it stays
		}
		vm.PID = 0
		vm.LastError = fmt.Sprintf("%s: %v", stage, err)
		if werr := d.end(context.WithoutCancel(ctx), vm, in); werr != nil {
			// The host is clean; the intent stays and recovery records
			// the stop once the store takes writes again.
			d.log.Error("recording failed start", "vm", vm.Name, "err", werr)
			return nil, nil, fmt.Errorf("starting vm %s: %s: %w (and recording that failed: %v)", vm.Name, stage, err, werr)
		}
		return nil, nil, fmt.Errorf("starting vm %s: %s: %w", vm.Name, stage, err)
	}

	// Storage.
	disk, err := d.diskOf(ctx, vm)
	if err != nil {
		return fail("root disk", err)
	}
	disk.ImagePath = img.RootfsPath
	st, err := d.storage.Activate(ctx, disk)
	if serr := setStorage(vm, st); serr != nil && err == nil {
		err = serr
	}
	if err != nil {
		return fail("root disk", err)
	}
	rv.add("deactivate root disk", func(ctx context.Context) error {
		disk, err := d.diskOf(ctx, vm)
		if err != nil {
			return err
		}
		st, err := d.storage.Deactivate(ctx, disk)
		if serr := setStorage(vm, st); serr != nil && err == nil {
			err = serr
		}
		return err
	})
	if !st.HomeChecked {
		// Once per work disk: a home the guest has used since is its own
		// business, even one holding a root/ of its own.
		moved, err := d.storage.RepairNestedRoot(ctx, workDisk(vm))
		if err != nil {
			return fail("repairing nested /root on the work disk", err)
		}
		if len(moved) > 0 {
			d.log.Info("flattened nested /root on work disk", "vm", vm.Name, "moved", strings.Join(moved, ", "))
			notices = append(notices, fmt.Sprintf("repaired the work disk's nested /root layout (%d entries moved up)", len(moved)))
		}
		st.HomeChecked = true
		if err := setStorage(vm, st); err != nil {
			return fail("root disk", err)
		}
		if err := d.store.SetStorage(ctx, vm.ID, vm.Storage); err != nil {
			return fail("recording the work disk's home check", err)
		}
	}
	d.progress(vm, t0, "storage", "root disk: "+storage.DriverLabel(st.Driver))

	// Network.
	if err := d.ensureBridge(ctx); err != nil {
		return fail("network", err)
	}
	if err := d.attachTap(ctx, vm.Tap); err != nil {
		return fail("network", fmt.Errorf("creating tap %s: %w", vm.Tap, err))
	}
	rv.add("delete tap", func(ctx context.Context) error { return d.host.DeleteTap(ctx, vm.Tap) })
	if err := d.checkTap(vm.Tap, d.cfg.BridgeName); err != nil {
		return fail("network", err)
	}
	if vm.NAT {
		if err := d.ensureNAT(ctx); err != nil {
			return fail("nat", err)
		}
		if err := d.host.NATAdd(ctx, vm.IP); err != nil {
			return fail("nat", fmt.Errorf("adding %s to NAT: %w", vm.IP, err))
		}
		rv.add("remove nat", func(ctx context.Context) error { return d.host.NATRemove(ctx, vm.IP) })
	}
	d.progress(vm, t0, "network", "tap "+vm.Tap)

	// Firecracker.
	sock, vs := apiSock(vm), vsockPath(vm)
	for _, p := range []string{sock, vs} {
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
			return fail("firecracker", fmt.Errorf("removing stale socket %s: %w", p, err))
		}
	}
	pr, err := d.launch(ctx, vm, firecracker.LaunchSpec{
		Binary:      d.cfg.FirecrackerBin,
		APISock:     sock,
		ID:          "banger-" + vm.ID,
		LogPath:     filepath.Join(vm.Dir, fileFCLog),
		ConsolePath: filepath.Join(vm.Dir, fileConsole),
	})
	if err != nil {
		return fail("firecracker", err)
	}
	rv.add("stop firecracker", func(ctx context.Context) error {
		var errs []error
		if err := pr.p.Kill(); err != nil && !errors.Is(err, procwatch.ErrGone) {
			errs = append(errs, fmt.Errorf("killing firecracker pid %d: %w", pr.pid, err))
		}
		if !d.waitGone(ctx, vm.ID, pr.pid, 10*time.Second) {
			errs = append(errs, fmt.Errorf("firecracker pid %d did not exit", pr.pid))
		}
		d.vms.forget(vm.ID, pr)
		for _, p := range []string{vs, sock} {
			if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	})
	vm.PID = pr.pid
	if err := d.saveVM(ctx, vm); err != nil {
		return fail("firecracker", err)
	}
	fc := firecracker.NewClient(sock)
	exited := func() (bool, string) { return pr.exited(), pr.reason() }
	if err := firecracker.WaitReady(ctx, fc, 10*time.Second, exited); err != nil {
		return fail("firecracker", err)
	}
	d.progress(vm, t0, "launch", fmt.Sprintf("firecracker pid %d answers on its API socket", pr.pid))
	if snap != nil {
		if err := d.loadSnapshot(ctx, fc, vm, snap, st.RootDisk); err != nil {
			if done, why := exited(); done {
				err = fmt.Errorf("%w (%s)", err, why)
			}
			return fail("restoring", err)
		}
		restored := snap
		snap = nil // consumed: a failure from here on ends stopped
		d.progress(vm, t0, "firecracker", "snapshot of "+restored.CreatedAt.Local().Format(time.DateTime)+" loaded and resumed")
	} else {
		if err := removeSnapshot(vm); err != nil { // a stale one never outlives a cold boot
			return fail("firecracker", err)
		}
		if err := d.configure(ctx, fc, vm, img); err != nil {
			return fail("configuring firecracker", err)
		}
		if err := fc.InstanceStart(ctx); err != nil {
			if done, why := exited(); done {
				err = fmt.Errorf("%w (%s)", err, why)
			}
			return fail("InstanceStart", err)
		}
		d.progress(vm, t0, "firecracker", "configured and booting")
	}
	vm.State = api.StateRunning
	vm.StartedAt = time.Now()
	vm.LastUsedAt = vm.StartedAt
	vm.Pending = nil
	if err := d.end(ctx, vm, in); err != nil {
		return fail("recording the running vm", err)
	}

	// Agent health, then DNS. A Firecracker that dies during boot fails
	// the start: its host side is undone and no name is published.
	h, err := d.waitHealthy(ctx, vm, pr)
	if err != nil {
		if d.net.records != nil {
			d.net.records.Remove(vm.Name)
		}
		return fail("firecracker exited during boot", err)
	}
	rv.success()
	if op == opRestore && h.Healthy {
		d.stepClock(ctx, vm)
	}
	if h.Healthy {
		d.progress(vm, t0, "agent", fmt.Sprintf("healthy in %.1f ms", h.RTTMillis))
	} else {
		d.progress(vm, t0, "agent", "unhealthy: "+h.Reason)
		d.log.Warn("vm running but unhealthy", "vm", vm.Name, "reason", h.Reason)
	}
	if d.net.records != nil {
		d.net.records.Set(vm.Name, vm.IP)
	}
	d.progress(vm, t0, "dns", vm.Name+".vm")
	d.forwardsUp(ctx, vm, t0)
	return &h, notices, nil
}

func (d *Daemon) configure(ctx context.Context, fc *firecracker.Client, vm *store.VM, img store.Image) error {
	kernel, initrd := d.kernelFor(img)
	if err := fc.PutMachineConfig(ctx, firecracker.MachineConfig{VCPUCount: vm.VCPU, MemSizeMib: vm.MemoryMiB}); err != nil {
		return err
	}
	ipArg := network.KernelIPArg(vm.IP, d.cfg.BridgeIP, d.cfg.CIDR, vm.Name, d.cfg.DefaultDNS)
	if err := fc.PutBootSource(ctx, firecracker.BootSource{KernelImagePath: kernel, InitrdPath: initrd, BootArgs: firecracker.KernelCmdline(ipArg)}); err != nil {
		return err
	}
	st, err := vmStorage(vm)
	if err != nil {
		return err
	}
	if err := fc.PutDrive(ctx, firecracker.Drive{DriveID: "rootfs", PathOnHost: st.RootDisk, IsRootDevice: true}); err != nil {
		return err
	}
	if err := fc.PutDrive(ctx, firecracker.Drive{DriveID: "work", PathOnHost: workDisk(vm)}); err != nil {
		return err
	}
	if err := fc.PutNetworkInterface(ctx, firecracker.NetworkInterface{IfaceID: "eth0", HostDevName: vm.Tap, GuestMAC: vm.MAC}); err != nil {
		return err
	}
	if err := fc.PutVsock(ctx, firecracker.Vsock{GuestCID: vm.CID, UDSPath: vsockPath(vm)}); err != nil {
		return err
	}
	return d.configureBalloon(ctx, fc, vm)
}

// agentClient talks to the VM's guest agent over Firecracker's hybrid vsock.
func agentClient(vm *store.VM) *agent.Client {
	path := vsockPath(vm)
	return agent.NewClient(func(ctx context.Context) (net.Conn, error) {
		return firecracker.DialVsock(ctx, path, agent.DefaultPort)
	})
}

// waitHealthy polls the agent until it answers or the boot deadline passes.
// It fails with Firecracker's reason (exit status, last log lines) when the
// process exits meanwhile.
func (d *Daemon) waitHealthy(ctx context.Context, vm *store.VM, pr *proc) (api.Health, error) {
	deadline := time.Now().Add(d.cfg.BootDeadline)
	cl := agentClient(vm)
	died := func() error { return errors.New(pr.reason()) }
	var last error
	for {
		if pr.exited() {
			return api.Health{}, died()
		}
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		hz, rtt, err := cl.Health(actx)
		cancel()
		if err == nil {
			return api.Health{VM: vm.Name, Healthy: true, State: api.StateRunning, RTTMillis: float64(rtt.Microseconds()) / 1000,
				UptimeS: hz.UptimeS, Version: hz.Version, Hostname: hz.Hostname}, nil
		}
		last = err
		if time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		select {
		case <-time.After(100 * time.Millisecond):
		case <-pr.done:
		case <-ctx.Done():
		}
	}
	if pr.exited() {
		return api.Health{}, died()
	}
	reason := fmt.Sprintf("guest agent did not answer within %s", d.cfg.BootDeadline)
	if last != nil {
		reason += ": " + last.Error()
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		reason = "request cancelled while waiting for the guest agent"
	}
	return api.Health{VM: vm.Name, State: api.StateRunning, Reason: reason}, nil
}
