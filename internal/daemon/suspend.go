package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/firecracker"
	"banger/internal/store"
)

// Suspend and restore (issue 14). Suspend pauses the guest, has
// Firecracker write a full snapshot into the VM directory, makes the memory
// file sparse, records the snapshot's identity (snapshot.json, see
// suspend_files.go), ends the process and releases the tap, NAT entry and
// storage activation: the VM is suspended. The next start restores it
// (startLocked calls checkSnapshot and loadSnapshot): the same tap and
// drive paths come back, a fresh Firecracker loads the snapshot and
// resumes, and once the agent answers its clock is stepped to the host's.
//
// Both are crash-safe: opSuspend and opRestore intents are recorded first
// and finished or undone by recoverSuspend and recoverRestore.

const (
	opSuspend = "suspend"
	opRestore = "restore"
)

// suspendData is what an interrupted suspend needs to be undone.
type suspendData struct {
	WasPaused bool `json:"was_paused"`
}

// suspendVM suspends the VM with id (name or ID); it takes the VM's lock.
// reason is recorded as the VM's stop reason ("suspended by user").
func (d *Daemon) suspendVM(ctx context.Context, id string, reason string) error {
	vm, unlock, err := d.lockedVM(ctx, id)
	if err != nil {
		return err
	}
	defer unlock()
	return d.suspendLocked(ctx, &vm, reason)
}

// wake makes the VM with id run: a suspended one is restored (under its
// lock) and wake returns once its agent is healthy; a paused one is
// resumed; a running one returns at once.
func (d *Daemon) wake(ctx context.Context, id string) error {
	vm, unlock, err := d.lockedVM(ctx, id)
	if err != nil {
		return err
	}
	defer unlock()
	switch vm.State {
	case api.StateRunning:
		return nil
	case api.StatePaused:
		return d.resumeLocked(ctx, &vm)
	case api.StateSuspended:
		if err := d.preflightStart(ctx); err != nil {
			return err
		}
		h, _, err := d.startLocked(ctx, &vm, time.Now())
		if err != nil {
			return err
		}
		if !h.Healthy {
			return fmt.Errorf("waking vm %s: restored but its agent is unhealthy: %s", vm.Name, h.Reason)
		}
		return nil
	}
	return withKind(ErrConflict, "vm %s is %s; only a running, paused or suspended vm can be woken", vm.Name, vm.State)
}

// rpcPause, rpcResume and rpcSuspend take api.VMRef.
func (d *Daemon) rpcPause(ctx context.Context, raw json.RawMessage) (any, error) {
	_, vm, unlock, err := lockedParams(ctx, d, api.MethodVMPause, raw, func(p *api.VMRef) string { return p.Ref })
	if err != nil {
		return nil, err
	}
	defer unlock()
	res := api.VMResult{}
	if vm.State == api.StatePaused {
		res.Notices = []string{vm.Name + " was already paused"}
	} else if err := d.pauseLocked(ctx, &vm); err != nil {
		return nil, err
	}
	res.VM = d.toAPI(ctx, vm)
	return res, nil
}

func (d *Daemon) rpcResume(ctx context.Context, raw json.RawMessage) (any, error) {
	_, vm, unlock, err := lockedParams(ctx, d, api.MethodVMResume, raw, func(p *api.VMRef) string { return p.Ref })
	if err != nil {
		return nil, err
	}
	defer unlock()
	res := api.VMResult{}
	switch vm.State {
	case api.StateRunning:
		res.Notices = []string{vm.Name + " was not paused"}
	case api.StateSuspended:
		return nil, withKind(ErrConflict, "vm %s is suspended, not paused; restore it with: banger vm start %s", vm.Name, vm.Name)
	default:
		if err := d.resumeLocked(ctx, &vm); err != nil {
			return nil, err
		}
	}
	res.VM = d.toAPI(ctx, vm)
	return res, nil
}

func (d *Daemon) rpcSuspend(ctx context.Context, raw json.RawMessage) (any, error) {
	_, vm, unlock, err := lockedParams(ctx, d, api.MethodVMSuspend, raw, func(p *api.VMRef) string { return p.Ref })
	if err != nil {
		return nil, err
	}
	defer unlock()
	res := api.VMResult{}
	if vm.State == api.StateSuspended {
		res.Notices = []string{vm.Name + " was already suspended"}
	} else if err := d.suspendLocked(ctx, &vm, "suspended by user"); err != nil {
		return nil, err
	}
	res.VM = d.toAPI(ctx, vm)
	return res, nil
}

// pauseLocked pauses a running VM's vCPUs. Its tap, DNS name and forwards
// stay.
func (d *Daemon) pauseLocked(ctx context.Context, vm *store.VM) error {
	if vm.State != api.StateRunning {
		return withKind(ErrConflict, "vm %s is %s; only a running vm can be paused", vm.Name, vm.State)
	}
	if livePID(vm) == 0 {
		return withKind(ErrConflict, "vm %s has no running firecracker to pause", vm.Name)
	}
	if err := firecracker.NewClient(apiSock(vm)).PatchVM(ctx, firecracker.VMPaused); err != nil {
		return fmt.Errorf("pausing vm %s: %w", vm.Name, err)
	}
	vm.State = api.StatePaused
	if err := d.saveVM(ctx, vm); err != nil {
		// Better running and recorded so than paused behind the store's back.
		_ = firecracker.NewClient(apiSock(vm)).PatchVM(context.WithoutCancel(ctx), firecracker.VMResumed)
		vm.State = api.StateRunning
		return fmt.Errorf("pausing vm %s: %w", vm.Name, err)
	}
	return nil
}

// resumeLocked resumes a paused VM.
func (d *Daemon) resumeLocked(ctx context.Context, vm *store.VM) error {
	if vm.State != api.StatePaused {
		return withKind(ErrConflict, "vm %s is %s; only a paused vm can be resumed", vm.Name, vm.State)
	}
	if err := firecracker.NewClient(apiSock(vm)).PatchVM(ctx, firecracker.VMResumed); err != nil {
		return fmt.Errorf("resuming vm %s: %w", vm.Name, err)
	}
	vm.State = api.StateRunning
	vm.LastUsedAt = time.Now()
	return d.saveVM(ctx, vm)
}

// unpauseForStop resumes a paused VM's vCPUs so that it can react to
// Ctrl-Alt-Del; a failure only costs the graceful stop.
func (d *Daemon) unpauseForStop(ctx context.Context, vm *store.VM) {
	if vm.State != api.StatePaused {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := firecracker.NewClient(apiSock(vm)).PatchVM(cctx, firecracker.VMResumed); err != nil {
		d.log.Warn("resuming a paused vm before stopping it", "vm", vm.Name, "err", err)
	}
}

// suspendLocked suspends a running or paused VM; the caller holds its
// lock. On failure before the snapshot is whole, the VM is as it was.
func (d *Daemon) suspendLocked(ctx context.Context, vm *store.VM, reason string) error {
	if vm.State != api.StateRunning && vm.State != api.StatePaused {
		return withKind(ErrConflict, "vm %s is %s; only a running or paused vm can be suspended", vm.Name, vm.State)
	}
	pid := livePID(vm)
	if pid == 0 {
		return withKind(ErrConflict, "vm %s has no running firecracker to suspend", vm.Name)
	}
	img, err := d.store.GetImage(ctx, vm.ImageID)
	if err != nil {
		return fmt.Errorf("suspending vm %s: loading its image: %w", vm.Name, err)
	}
	fc := firecracker.NewClient(apiSock(vm))
	ver, err := fc.GetVersion(ctx)
	if err != nil {
		return fmt.Errorf("suspending vm %s: asking firecracker its version: %w", vm.Name, err)
	}
	// The machine the process really has: a vm set while it ran changed
	// only the record (pending), and a restore then refuses the snapshot.
	mc, err := fc.GetMachineConfig(ctx)
	if err != nil {
		return fmt.Errorf("suspending vm %s: asking firecracker its machine configuration: %w", vm.Name, err)
	}
	kernel, initrd := d.kernelFor(img)
	si := &snapshotInfo{Firecracker: ver.FirecrackerVersion, Kernel: kernel, Initrd: initrd, VCPU: mc.VCPUCount, MemoryMiB: mc.MemSizeMib,
		Tap: vm.Tap, MAC: vm.MAC, VsockPath: vsockPath(vm), CID: vm.CID, WasPaused: vm.State == api.StatePaused}
	if si.KernelSHA256, err = fileSHA256(kernel); err != nil {
		return fmt.Errorf("suspending vm %s: hashing its kernel: %w", vm.Name, err)
	}
	if si.InitrdSHA256, err = fileSHA256(initrd); err != nil {
		return fmt.Errorf("suspending vm %s: hashing its initrd: %w", vm.Name, err)
	}
	st, err := vmStorage(vm)
	if err != nil {
		return err
	}
	si.Drives = []snapDrive{{ID: "rootfs", Path: st.RootDisk}, {ID: "work", Path: workDisk(vm)}}
	if vm.State == api.StateRunning {
		hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if hz, _, err := agentClient(vm).Health(hctx); err == nil {
			si.BootID = hz.BootID
		}
		cancel()
	}

	in, err := d.begin(ctx, vm, opSuspend, suspendData{WasPaused: si.WasPaused})
	if err != nil {
		return fmt.Errorf("suspending vm %s: %w", vm.Name, err)
	}
	// undo puts the VM back as it was, before the snapshot is whole.
	undo := func(stage string, cause error) error {
		uctx := context.WithoutCancel(ctx)
		if err := removeSnapshot(vm); err != nil {
			d.log.Warn("removing a partial snapshot", "vm", vm.Name, "err", err)
		}
		if !si.WasPaused {
			if err := fc.PatchVM(uctx, firecracker.VMResumed); err != nil {
				d.log.Error("resuming vm after a failed suspend", "vm", vm.Name, "err", err)
			}
		}
		if err := d.end(uctx, vm, in); err != nil {
			return fmt.Errorf("suspending vm %s: %s: %w (and recording that failed: %v)", vm.Name, stage, cause, err)
		}
		return fmt.Errorf("suspending vm %s: %s: %w", vm.Name, stage, cause)
	}
	if err := removeSnapshot(vm); err != nil {
		return undo("removing an old snapshot", err)
	}
	if !si.WasPaused {
		if err := fc.PatchVM(ctx, firecracker.VMPaused); err != nil {
			return undo("pausing", err)
		}
	}
	if err := fc.CreateSnapshot(ctx, firecracker.SnapshotCreate{SnapshotPath: snapStatePath(vm), MemFilePath: snapMemPath(vm), SnapshotType: "Full"}); err != nil {
		return undo("creating the snapshot", err)
	}
	before := allocatedBytes(snapMemPath(vm))
	used, err := punchZeroPages(snapMemPath(vm))
	if err != nil {
		return undo("making the memory file sparse", err)
	}
	fi, err := os.Stat(snapMemPath(vm))
	if err != nil {
		return undo("reading the memory file", err)
	}
	si.MemBytes = fi.Size()
	if si.StateSHA256, err = fileSHA256(snapStatePath(vm)); err != nil {
		return undo("hashing the state file", err)
	}
	if fi, err := os.Stat(snapStatePath(vm)); err == nil {
		si.StateBytes = fi.Size()
	}
	si.CreatedAt = time.Now().UTC()
	if err := writeSnapshotInfo(vm, si); err != nil {
		return undo("recording the snapshot's identity", err)
	}
	d.log.Info("snapshot written", "vm", vm.Name, "firecracker", si.Firecracker, "memory_bytes", si.MemBytes,
		"allocated_before", before, "allocated_after", used)

	// The snapshot is whole: from here on the suspend is finished, by
	// recovery if need be.
	return d.finishSuspend(ctx, vm, pid, reason, in)
}

// finishSuspend ends the VM's process (paused, it has nothing to lose),
// releases its host resources and records it suspended.
func (d *Daemon) finishSuspend(ctx context.Context, vm *store.VM, pid int, reason string, ins ...*store.Intent) error {
	if pid > 0 {
		if err := d.killWait(ctx, vm, pid, syscall.SIGKILL); err != nil {
			// A live process must not keep the disks while a restore
			// could use them: the snapshot goes.
			if rerr := removeSnapshot(vm); rerr != nil {
				d.log.Error("removing the snapshot of a vm whose process would not end", "vm", vm.Name, "err", rerr)
			}
			return d.stopFailed(ctx, vm, err, ins...)
		}
	}
	var err error
	release := func() { err = d.teardown(ctx, vm) }
	if d.fwd != nil {
		d.fwd.sleepThrough(vm.ID, release) // its forwards stay open; a connection wakes it
	} else {
		release()
	}
	if err != nil {
		d.log.Warn("releasing host resources of a suspended vm", "vm", vm.Name, "err", err)
		vm.LastError = "suspended, but releasing host resources failed: " + err.Error()
	}
	vm.State = api.StateSuspended
	vm.PID = 0
	vm.StopReason = reason
	return d.end(ctx, vm, ins...)
}

// snapshotRefusal is why a snapshot cannot be restored; it leaves the VM
// suspended and its snapshot in place.
func snapshotRefusal(vm *store.VM, format string, a ...any) error {
	return withKind(ErrConflict, "cannot restore vm %s from its snapshot: %s; the snapshot is kept (banger vm start --cold %s discards it and boots afresh)",
		vm.Name, fmt.Sprintf(format, a...), vm.Name)
}

// checkSnapshot reads the suspended VM's snapshot identity and checks it
// against what a restore would use now. Nothing is changed.
func (d *Daemon) checkSnapshot(vm *store.VM, img store.Image) (*snapshotInfo, error) {
	si, err := readSnapshotInfo(vm)
	if errors.Is(err, os.ErrNotExist) {
		return nil, snapshotRefusal(vm, "its snapshot identity %s is missing", snapInfoPath(vm))
	}
	if err != nil {
		return nil, snapshotRefusal(vm, "%v", err)
	}
	ver, err := binaryVersion(d.cfg.FirecrackerBin)
	if err != nil {
		return nil, snapshotRefusal(vm, "the firecracker version is unknown: %v", err)
	}
	if ver != si.Firecracker {
		return nil, snapshotRefusal(vm, "it was made by Firecracker v%s and %s is v%s (a snapshot loads only in the Firecracker version that made it)", si.Firecracker, d.cfg.FirecrackerBin, ver)
	}
	kernel, initrd := d.kernelFor(img)
	if kernel != si.Kernel || initrd != si.Initrd {
		return nil, snapshotRefusal(vm, "it was made with kernel %s and the vm now boots %s", si.Kernel, kernel)
	}
	if sum, err := fileSHA256(kernel); err != nil || sum != si.KernelSHA256 {
		return nil, snapshotRefusal(vm, "the kernel %s changed since the snapshot (sha256 %s, was %s)", kernel, short(sum), short(si.KernelSHA256))
	}
	if sum, err := fileSHA256(initrd); err != nil || sum != si.InitrdSHA256 {
		return nil, snapshotRefusal(vm, "the initrd %s changed since the snapshot", initrd)
	}
	if vm.VCPU != si.VCPU || vm.MemoryMiB != si.MemoryMiB {
		return nil, snapshotRefusal(vm, "it was made with %d vCPUs and %d MiB and vm set has changed the vm to %d vCPUs and %d MiB", si.VCPU, si.MemoryMiB, vm.VCPU, vm.MemoryMiB)
	}
	if vm.Tap != si.Tap || vm.MAC != si.MAC || vm.CID != si.CID || vsockPath(vm) != si.VsockPath {
		return nil, snapshotRefusal(vm, "its network or vsock layout changed (tap %s, mac %s, cid %d)", si.Tap, si.MAC, si.CID)
	}
	fi, err := os.Stat(snapMemPath(vm))
	if err != nil {
		return nil, snapshotRefusal(vm, "its memory file is unreadable: %v", err)
	}
	if fi.Size() != si.MemBytes || si.MemBytes != int64(si.MemoryMiB)<<20 {
		return nil, snapshotRefusal(vm, "its memory file %s is %d bytes, want %d (damaged)", snapMemPath(vm), fi.Size(), si.MemBytes)
	}
	if sum, err := fileSHA256(snapStatePath(vm)); err != nil || sum != si.StateSHA256 {
		return nil, snapshotRefusal(vm, "its state file %s is missing or damaged (sha256 does not match)", snapStatePath(vm))
	}
	return si, nil
}

func short(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	if s == "" {
		return "unreadable"
	}
	return s
}

// loadSnapshot loads the snapshot into the fresh Firecracker behind fc and
// resumes the guest. rootDisk is where the root disk is now. On success
// the snapshot is removed at once: the guest runs and its disks move on.
func (d *Daemon) loadSnapshot(ctx context.Context, fc *firecracker.Client, vm *store.VM, si *snapshotInfo, rootDisk string) error {
	for _, dr := range si.Drives {
		want := rootDisk
		if dr.ID == "work" {
			want = workDisk(vm)
		}
		if dr.Path != want {
			return snapshotRefusal(vm, "its drive %s was %s and is now %s", dr.ID, dr.Path, want)
		}
	}
	load := firecracker.SnapshotLoad{
		SnapshotPath: snapStatePath(vm),
		MemBackend:   &firecracker.MemoryBackend{BackendType: "File", BackendPath: snapMemPath(vm)},
		ResumeVM:     true,
	}
	// The taps and vsock path are the same as at suspend; Firecracker v1.16
	// takes them as explicit overrides (older versions refuse the fields).
	if versionAtLeast(si.Firecracker, "1.16") {
		load.NetworkOverrides = []firecracker.NetworkOverride{{IfaceID: "eth0", HostDevName: vm.Tap}}
		load.VsockOverride = &firecracker.VsockOverride{UDSPath: vsockPath(vm)}
	}
	if err := fc.LoadSnapshot(ctx, load); err != nil {
		return fmt.Errorf("firecracker could not load the snapshot (it is kept; banger vm start --cold %s discards it): %w", vm.Name, err)
	}
	if err := removeSnapshot(vm); err != nil {
		d.log.Error("removing a restored snapshot", "vm", vm.Name, "err", err)
	}
	return nil
}

// stepClock sets the restored guest's clock to the host's: its clock stood
// still while it was suspended. An agent older than protocol 2 cannot (its
// answer is a 404; /healthz then tells its protocol): that is logged and the
// restore goes on.
func (d *Daemon) stepClock(ctx context.Context, vm *store.VM) {
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	cl := agentClient(vm)
	behind, err := cl.SetClock(cctx, time.Now())
	if err == nil {
		d.log.Info("stepped the restored guest's clock", "vm", vm.Name, "behind", behind.Round(time.Millisecond))
		return
	}
	if hz, _, herr := cl.Health(cctx); herr == nil && hz.Protocol < agent.ProtocolClock {
		d.log.Info("not stepping the restored guest's clock: "+oldAgentMessage(d.toAPI(ctx, *vm).Image, "clock step"), "vm", vm.Name, "protocol", hz.Protocol)
		return
	}
	d.log.Warn("stepping the restored guest's clock", "vm", vm.Name, "err", err)
}

// discardSnapshotLocked drops a suspended VM's snapshot: the VM becomes
// stopped and boots afresh at its next start. It returns the notice saying
// what was lost.
func (d *Daemon) discardSnapshotLocked(ctx context.Context, vm *store.VM, reason string) (string, error) {
	if err := removeSnapshot(vm); err != nil {
		return "", err
	}
	d.forwardsDown(vm, "vm stopped") // kept open while it slept
	vm.State = api.StateStopped
	vm.StopReason = reason
	if err := d.saveVM(ctx, vm); err != nil {
		return "", err
	}
	return fmt.Sprintf("discarded the snapshot of %s: its memory (running programs, unsaved state) is lost; the next start boots afresh", vm.Name), nil
}

// recoverSuspend finishes or undoes a suspend whose daemon died: a whole
// snapshot (snapshot.json written) is finished, anything less undone. The
// process is asked first, which also waits out a create still under way.
func (d *Daemon) recoverSuspend(ctx context.Context, vm *store.VM, in *store.Intent) error {
	var data suspendData
	_ = json.Unmarshal(in.Data, &data)
	pid := livePID(vm)
	fc := firecracker.NewClient(apiSock(vm))
	if pid > 0 {
		qctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := fc.GetInstanceInfo(qctx) // answers once a create under way is done
		cancel()
		if err != nil {
			d.log.Warn("recovering a suspend: firecracker does not answer", "vm", vm.Name, "err", err)
		}
	}
	if _, err := readSnapshotInfo(vm); err == nil {
		d.log.Info("finishing an interrupted suspend", "vm", vm.Name)
		return d.finishSuspend(ctx, vm, pid, "suspended (finished by bangerd after an interruption)", in)
	}
	if err := removeSnapshot(vm); err != nil {
		d.log.Warn("removing a partial snapshot", "vm", vm.Name, "err", err)
	}
	if pid == 0 {
		vm.State = api.StateStopping
		return d.finishStop(ctx, vm, "suspend interrupted and firecracker gone", in)
	}
	vm.State = api.StatePaused
	if !data.WasPaused {
		if err := fc.PatchVM(ctx, firecracker.VMResumed); err != nil {
			d.log.Warn("resuming a vm after an interrupted suspend", "vm", vm.Name, "err", err)
		} else {
			vm.State = api.StateRunning
		}
	}
	vm.PID = pid
	d.log.Info("undid an interrupted suspend", "vm", vm.Name, "state", vm.State)
	return d.end(ctx, vm, in)
}

// recoverRestore finishes or undoes a restore whose daemon died. A
// Firecracker that has loaded the snapshot runs the guest: the VM is
// running (reconcile adopts it) and the snapshot is gone. One that has not
// is ended and the VM is suspended again with its snapshot.
func (d *Daemon) recoverRestore(ctx context.Context, vm *store.VM, in *store.Intent) error {
	pid := livePID(vm)
	loaded := false
	if pid > 0 {
		qctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		info, err := firecracker.NewClient(apiSock(vm)).GetInstanceInfo(qctx) // waits out a load under way
		cancel()
		loaded = err == nil && info.State != "Not started"
		if err != nil {
			d.log.Warn("recovering a restore: firecracker does not answer", "vm", vm.Name, "err", err)
		}
	}
	_, infoErr := readSnapshotInfo(vm)
	haveSnapshot := infoErr == nil
	switch {
	case loaded:
		if haveSnapshot {
			if err := removeSnapshot(vm); err != nil {
				return err
			}
		}
		vm.State = api.StateRunning
		vm.PID = pid
		vm.StartedAt = time.Now()
		d.log.Info("finished an interrupted restore: the guest runs", "vm", vm.Name, "pid", pid)
		if err := d.end(ctx, vm, in); err != nil {
			return err
		}
		d.stepClock(ctx, vm)
		return nil
	case haveSnapshot:
		if pid > 0 {
			if err := d.killWait(ctx, vm, pid, syscall.SIGKILL); err != nil {
				return d.stopFailed(ctx, vm, err, in)
			}
		}
		if err := d.teardown(ctx, vm); err != nil {
			return d.stopFailed(ctx, vm, err, in)
		}
		vm.State = api.StateSuspended
		vm.PID = 0
		d.log.Info("undid an interrupted restore: suspended again", "vm", vm.Name)
		return d.end(ctx, vm, in)
	default:
		vm.State = api.StateStopping
		if pid > 0 {
			return d.stopWith(ctx, vm, pid, "restore interrupted; stopped by bangerd", in)
		}
		return d.finishStop(ctx, vm, "restore interrupted; the snapshot was consumed", in)
	}
}
