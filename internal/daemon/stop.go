package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/api"
	"banger/internal/firecracker"
	"banger/internal/hostops"
	"banger/internal/procwatch"
	"banger/internal/store"
)

// livePID finds the VM's Firecracker process. The stored PID counts only
// if that process's command line names the VM's API socket; otherwise the
// socket wins and /proc is scanned for the process serving it.
func livePID(vm *store.VM) int {
	sock := apiSock(vm)
	if vm.PID > 0 && firecracker.Alive(vm.PID, sock) {
		return vm.PID
	}
	if pid, err := firecracker.FindByAPISocket(sock); err == nil && pid > 0 {
		return pid
	}
	return 0
}

// stopLocked stops a VM gracefully, falling through to a forced stop after
// stop_grace. The caller holds the VM's lock.
func (d *Daemon) stopLocked(ctx context.Context, vm *store.VM, reason string) error {
	if vm.State == api.StateSuspended {
		_, err := d.discardSnapshotLocked(ctx, vm, reason)
		return err
	}
	d.unpauseForStop(ctx, vm)
	pid := livePID(vm)
	if pid == 0 && (vm.State == api.StateStopped || vm.State == api.StateCreated) {
		return d.finishStop(ctx, vm, vm.StopReason)
	}
	prev := *vm
	vm.State = api.StateStopping
	in, err := d.begin(ctx, vm, opStop, nil)
	if err != nil {
		*vm = prev
		return fmt.Errorf("stopping vm %s: %w", vm.Name, err)
	}
	return d.stopWith(ctx, vm, pid, reason, in)
}

// stopWith stops the process pid (0: none) of a VM recorded as stopping,
// releases its host resources and records it stopped, clearing ins with
// that write.
func (d *Daemon) stopWith(ctx context.Context, vm *store.VM, pid int, reason string, ins ...*store.Intent) error {
	if pid > 0 {
		graceful := true
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := firecracker.NewClient(apiSock(vm)).SendCtrlAltDel(cctx)
		cancel()
		if err != nil {
			graceful = false
			d.log.Warn("graceful stop unavailable; forcing", "vm", vm.Name, "pid", pid, "stage", "send-ctrl-alt-del", "err", err)
		}
		if !graceful || !d.waitGone(ctx, vm.ID, pid, d.cfg.StopGrace) {
			if graceful {
				d.log.Warn("graceful stop timed out; forcing", "vm", vm.Name, "pid", pid, "stage", "wait-for-guest-shutdown", "waited", d.cfg.StopGrace.String())
			}
			if err := d.killWait(ctx, vm, pid, syscall.SIGKILL); err != nil {
				return d.stopFailed(ctx, vm, err, ins...)
			}
		}
	}
	return d.finishStop(ctx, vm, reason, ins...)
}

// killWait sends sig to the VM's Firecracker through its pidfd and waits
// for it to be gone. A pid that is not (or no longer) the VM's Firecracker
// is never signalled: it counts as gone.
func (d *Daemon) killWait(ctx context.Context, vm *store.VM, pid int, sig syscall.Signal) error {
	pr := d.procOf(vm, pid)
	if err := pr.p.Signal(sig); err != nil && !errors.Is(err, procwatch.ErrGone) {
		return fmt.Errorf("signalling firecracker pid %d: %w", pid, err)
	}
	if pr.wait(ctx, 10*time.Second) {
		return nil
	}
	return fmt.Errorf("firecracker pid %d did not exit within 10s of %s", pid, procwatch.SignalName(sig))
}

// stopFailed records the VM in error with why its stop failed (clearing
// ins: error is a state every command accepts) and returns the error.
func (d *Daemon) stopFailed(ctx context.Context, vm *store.VM, err error, ins ...*store.Intent) error {
	vm.State = api.StateError
	vm.LastError = err.Error()
	if werr := d.end(context.WithoutCancel(ctx), vm, ins...); werr != nil {
		d.log.Error("recording failed stop", "vm", vm.Name, "err", werr)
		return fmt.Errorf("stopping vm %s: %w (and recording that failed: %v)", vm.Name, err, werr)
	}
	return fmt.Errorf("stopping vm %s: %w", vm.Name, err)
}

// finishStop releases the VM's host resources and records it stopped (a
// created VM stays created), clearing ins with that write.
func (d *Daemon) finishStop(ctx context.Context, vm *store.VM, reason string, ins ...*store.Intent) error {
	if err := d.teardown(ctx, vm); err != nil {
		return d.stopFailed(ctx, vm, err, ins...)
	}
	if vm.State != api.StateCreated || vm.PID != 0 {
		vm.State = api.StateStopped
	}
	vm.PID = 0
	vm.StopReason = reason
	if err := d.end(ctx, vm, ins...); err != nil {
		return fmt.Errorf("stopping vm %s: %w", vm.Name, err)
	}
	return nil
}

// teardown releases the VM's host resources. Every step is idempotent and
// independent of tap metadata, so it is safe on a VM in any state.
func (d *Daemon) teardown(ctx context.Context, vm *store.VM) error {
	if d.net.records != nil {
		d.net.records.Remove(vm.Name)
	}
	var errs []string
	if err := d.host.NATRemove(ctx, vm.IP); err != nil {
		d.log.Warn("removing nat entry", "vm", vm.Name, "ip", vm.IP.String(), "err", err)
	}
	if err := d.host.DeleteTap(ctx, vm.Tap); err != nil {
		if errors.Is(err, hostops.ErrRefused) {
			// Someone else's interface under the VM's tap name (the seam
			// reports network.ErrNotBanger as a refusal): never ours to
			// remove, so it cannot block a stop or delete.
			d.log.Warn("leaving a foreign interface alone", "vm", vm.Name, "tap", vm.Tap, "err", err)
		} else {
			errs = append(errs, fmt.Sprintf("deleting tap %s: %v", vm.Tap, err))
		}
	}
	// The release needs only the recorded state, so a VM whose image is
	// gone still gives its devices back.
	if disk, err := d.diskOf(ctx, vm); err != nil {
		errs = append(errs, fmt.Sprintf("releasing root disk: %v", err))
	} else {
		st, err := d.storage.Deactivate(ctx, disk)
		if serr := setStorage(vm, st); serr != nil && err == nil {
			err = serr
		}
		if err != nil {
			errs = append(errs, fmt.Sprintf("releasing root disk: %v", err))
		}
	}
	for _, p := range []string{apiSock(vm), vsockPath(vm)} {
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) && !errors.Is(err, unix.ENOTDIR) {
			errs = append(errs, err.Error())
		}
	}
	if matches, _ := filepath.Glob(vsockPath(vm) + "_*"); len(matches) > 0 {
		for _, m := range matches {
			if err := os.Remove(m); err != nil && !os.IsNotExist(err) {
				d.log.Warn("removing a vsock listener socket", "vm", vm.Name, "path", m, "err", err)
			}
		}
	}
	d.vms.forget(vm.ID, nil)
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

// lockedVM resolves ref and takes the VM's lock. An operation on the VM
// that died (a killed daemon) or could not record its end is finished or
// undone first, so the caller sees a VM every command works on; a VM that
// this removes (an undone create, a finished delete) is not found.
func (d *Daemon) lockedVM(ctx context.Context, ref string) (store.VM, func(), error) {
	vm, err := d.resolve(ctx, ref)
	if err != nil {
		return store.VM{}, nil, err
	}
	unlock := d.locks.lock(vm.ID)
	name := vm.Name
	vm, err = d.store.GetVM(ctx, vm.ID)
	if errors.Is(err, store.ErrNotFound) {
		unlock()
		return store.VM{}, nil, withKind(ErrNotFound, "no vm named %q (it was removed meanwhile)", name)
	}
	if err != nil {
		unlock()
		return store.VM{}, nil, err
	}
	gone, err := d.recoverIntentsLocked(ctx, &vm)
	if err != nil {
		unlock()
		return store.VM{}, nil, fmt.Errorf("vm %s has an unfinished operation that could not be finished: %w", name, err)
	}
	if gone {
		unlock()
		return store.VM{}, nil, withKind(ErrNotFound, "no vm named %q (an interrupted operation removed it)", name)
	}
	return vm, unlock, nil
}

// lockedParams decodes a VM operation's params, resolves the VM they name
// and takes its lock; the caller releases it.
func lockedParams[P any](ctx context.Context, d *Daemon, method string, raw json.RawMessage, ref func(*P) string) (P, store.VM, func(), error) {
	var p P
	if err := decodeParams(method, raw, &p); err != nil {
		return p, store.VM{}, nil, err
	}
	vm, unlock, err := d.lockedVM(ctx, ref(&p))
	return p, vm, unlock, err
}

func (d *Daemon) rpcStop(ctx context.Context, raw json.RawMessage) (any, error) {
	_, vm, unlock, err := lockedParams(ctx, d, api.MethodVMStop, raw, func(p *api.VMStopParams) string { return p.Ref })
	if err != nil {
		return nil, err
	}
	defer unlock()
	res := api.VMResult{}
	if vm.State == api.StateStopped || vm.State == api.StateCreated {
		res.Notices = append(res.Notices, vm.Name+" was not running")
	}
	if vm.State == api.StateSuspended {
		res.Notices = append(res.Notices, "discarded the snapshot of "+vm.Name+": its memory (running programs, unsaved state) is lost; the next start boots afresh")
	}
	if err := d.stopLocked(ctx, &vm, "stopped by user"); err != nil {
		return nil, err
	}
	res.VM = d.toAPI(ctx, vm)
	return res, nil
}

func (d *Daemon) rpcRestart(ctx context.Context, raw json.RawMessage) (any, error) {
	var p api.VMRef
	if err := decodeParams(api.MethodVMRestart, raw, &p); err != nil {
		return nil, err
	}
	if err := d.preflightStart(ctx); err != nil {
		return nil, err
	}
	vm, unlock, err := d.lockedVM(ctx, p.Ref)
	if err != nil {
		return nil, err
	}
	defer unlock()
	t0 := time.Now()
	if err := d.stopLocked(ctx, &vm, "restarting"); err != nil {
		return nil, err
	}
	h, notices, err := d.startLocked(ctx, &vm, t0)
	if err != nil {
		return nil, err
	}
	return api.VMResult{VM: d.toAPI(ctx, vm), Health: h, Notices: notices}, nil
}

func parseSignal(s string) (syscall.Signal, error) {
	if s == "" {
		return syscall.SIGKILL, nil
	}
	name := strings.ToUpper(strings.TrimPrefix(strings.ToUpper(s), "SIG"))
	if sig := unix.SignalNum("SIG" + name); sig != 0 {
		return sig, nil
	}
	return 0, invalidf("unknown signal %q; use a name like KILL, TERM or INT", s)
}

// signalGrace is how long vm kill waits for a signal other than SIGKILL to
// end the process before saying that it still runs.
const signalGrace = 2 * time.Second

// rpcKill sends a signal to the VM's Firecracker and reports what ended it.
// SIGKILL (the default) must end it; another signal that ends it within
// signalGrace is recorded as what was sent and how the process ended; one
// that does not (CONT, STOP, a handled one) leaves the VM as it is and says
// so: nothing escalates to SIGKILL.
func (d *Daemon) rpcKill(ctx context.Context, raw json.RawMessage) (any, error) {
	var p api.VMKillParams
	if err := decodeParams(api.MethodVMKill, raw, &p); err != nil {
		return nil, err
	}
	sig, err := parseSignal(p.Signal)
	if err != nil {
		return nil, err
	}
	vm, unlock, err := d.lockedVM(ctx, p.Ref)
	if err != nil {
		return nil, err
	}
	defer unlock()
	res := api.VMResult{}
	pid := livePID(&vm)
	if pid == 0 && vm.State == api.StateSuspended {
		n, err := d.discardSnapshotLocked(ctx, &vm, "snapshot discarded by vm kill")
		if err != nil {
			return nil, err
		}
		res.Notices = append(res.Notices, vm.Name+" had no running process (it was suspended)", n)
		res.VM = d.toAPI(ctx, vm)
		return res, nil
	}
	if pid == 0 {
		res.Notices = append(res.Notices, vm.Name+" had no running process")
		if err := d.finishStop(ctx, &vm, vm.StopReason); err != nil {
			return nil, err
		}
		res.VM = d.toAPI(ctx, vm)
		return res, nil
	}
	name := procwatch.SignalName(sig)
	pr := d.procOf(&vm, pid)
	sent := true
	if err := pr.p.Signal(sig); errors.Is(err, procwatch.ErrGone) {
		sent = false
	} else if err != nil {
		return nil, fmt.Errorf("sending %s to firecracker pid %d of vm %s: %w", name, pid, vm.Name, err)
	}
	wait := signalGrace
	if sig == syscall.SIGKILL {
		wait = 10 * time.Second
	}
	if !pr.wait(ctx, wait) {
		if sig == syscall.SIGKILL {
			return nil, d.stopFailed(ctx, &vm, fmt.Errorf("firecracker pid %d did not exit within 10s of SIGKILL", pid))
		}
		msg := fmt.Sprintf("sent %s to firecracker (pid %d); it is still running", name, pid)
		if procStopped(pid) {
			msg += " but stopped: send CONT to resume it"
		}
		d.log.Info("signal did not end firecracker", "vm", vm.Name, "pid", pid, "signal", name)
		res.Notices = append(res.Notices, msg)
		res.VM = d.toAPI(ctx, vm)
		return res, nil
	}
	reason := "sent " + name + "; " + pr.status()
	if !sent {
		reason = pr.reason()
		res.Notices = append(res.Notices, fmt.Sprintf("%s had already exited (%s); %s was not sent", vm.Name, pr.status(), name))
	}
	if err := d.finishStop(ctx, &vm, reason); err != nil {
		return nil, err
	}
	res.VM = d.toAPI(ctx, vm)
	return res, nil
}

// procStopped reports whether pid is in the stopped state (SIGSTOP).
func procStopped(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && i+2 < len(b) && (b[i+2] == 'T' || b[i+2] == 't')
}

func (d *Daemon) rpcDelete(ctx context.Context, raw json.RawMessage) (any, error) {
	_, vm, unlock, err := lockedParams(ctx, d, api.MethodVMDelete, raw, func(p *api.VMRef) string { return p.Ref })
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := d.deleteLocked(ctx, &vm, nil); err != nil {
		return nil, err
	}
	return api.VMResult{VM: d.toAPI(ctx, vm)}, nil
}

// deleteLocked stops the VM, removes its disks and directory (whatever of
// them is left) and forgets it. resume is the delete intent of an
// interrupted delete being finished; nil begins one. The caller holds the
// VM's lock.
func (d *Daemon) deleteLocked(ctx context.Context, vm *store.VM, resume *store.Intent) error {
	in := resume
	if in == nil {
		var err error
		if in, err = d.begin(ctx, vm, opDelete, nil); err != nil {
			return fmt.Errorf("deleting vm %s: %w", vm.Name, err)
		}
	}
	// Until the disks go, a failed delete leaves a whole VM: its intent is
	// cleared (best effort) so the VM is not deleted behind the user's back.
	keep := func(err error) error {
		if resume == nil {
			if eerr := d.store.EndIntent(context.WithoutCancel(ctx), in.ID); eerr != nil && !errors.Is(eerr, store.ErrNotFound) {
				d.log.Error("clearing the intent of a failed delete", "vm", vm.Name, "err", eerr)
			}
		}
		return err
	}
	d.unpauseForStop(ctx, vm)
	pid := livePID(vm)
	if pid > 0 || vm.State == api.StateRunning || vm.State == api.StateStarting || vm.State == api.StateStopping || vm.State == api.StatePaused {
		vm.State = api.StateStopping
		if err := d.saveVM(ctx, vm); err != nil {
			return keep(fmt.Errorf("deleting vm %s: %w", vm.Name, err))
		}
		if err := d.stopWith(ctx, vm, pid, "deleting"); err != nil {
			return keep(err)
		}
	} else if err := d.teardown(ctx, vm); err != nil {
		return keep(fmt.Errorf("deleting vm %s: %w", vm.Name, err))
	}
	// From here on the delete is finished by recovery if it stops short.
	if err := d.removeDisks(ctx, vm); err != nil {
		return fmt.Errorf("deleting vm %s: %w", vm.Name, err)
	}
	if err := d.store.DeleteVM(ctx, vm.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("forgetting vm %s: %w", vm.Name, err)
	}
	d.forgetKnownHosts(vm.Name, vm.IP.String())
	a := d.toAPI(ctx, *vm)
	d.events.publish(api.Event{Kind: api.EventVMDeleted, Time: time.Now(), VM: &a, VMID: vm.ID})
	return nil
}
