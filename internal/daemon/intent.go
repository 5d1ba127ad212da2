package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"banger/internal/api"
	"banger/internal/hostops"
	"banger/internal/store"
)

// Intents. Every multi-step operation records what it is about to do
// before its host work, in the same transaction as the state change that
// starts it, and clears it in the one that ends it (store.Intent). An
// operation holds its VM's (or image's) lock from before the intent is
// written until after it is cleared, so an intent found under a free lock
// belongs to an operation that died (a killed daemon) or could not record
// its end (a failing store): recovery finishes or undoes it from what is
// actually on the host. That happens at start-up (in the background, each
// VM under its lock), in the periodic reconcile, and first thing in any
// command that takes the VM's lock.
//
// What recovery does:
//
//	create        undone: disks, directory and row removed (the create was never reported done)
//	start         ends stopped: the process (if it lives) is stopped, host resources released
//	stop          finished: ends stopped
//	delete        finished: stopped, disks and directory removed, row deleted
//	grow-work-disk finished: the grow is repeated (idempotent) and recorded
//	suspend       finished if the snapshot is whole (snapshot.json), else undone: the guest runs on
//	restore       finished if Firecracker loaded the snapshot (running), else undone: suspended again
//	image-register, image-build  finished if the image row exists, else its files removed
//	image-delete  finished: files and work-disk seeds removed
const (
	opCreate        = "create"
	opStart         = "start"
	opStop          = "stop"
	opDelete        = "delete"
	opGrow          = "grow-work-disk"
	opImageRegister = "image-register"
	opImageBuild    = "image-build"
	opImageDelete   = "image-delete"
)

// growData is what a work-disk grow needs to be finished.
type growData struct {
	Bytes int64 `json:"bytes"`
}

// imageData is what an image operation needs to be finished or undone.
type imageData struct {
	Name string `json:"name"`
	Dir  string `json:"dir"` // the image's own directory under images/ ("" when its files live elsewhere)
}

func intentData(v any) (json.RawMessage, error) {
	if v == nil {
		return nil, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encoding intent data: %w", err)
	}
	return b, nil
}

// begin records vm (with the state change the caller made to it) and the
// intent op in one transaction, and publishes the new state.
func (d *Daemon) begin(ctx context.Context, vm *store.VM, op string, data any) (*store.Intent, error) {
	raw, err := intentData(data)
	if err != nil {
		return nil, err
	}
	in := &store.Intent{VMID: vm.ID, Op: op, Data: raw}
	if err := d.store.Write(ctx, func(tx *store.Tx) error {
		if err := tx.UpdateVM(vm); err != nil {
			return err
		}
		return tx.BeginIntent(in)
	}); err != nil {
		return nil, fmt.Errorf("recording %s of vm %s: %w", op, vm.Name, err)
	}
	d.publishVM(ctx, vm)
	return in, nil
}

// end records vm and clears the given intents (nil ones are skipped) in one
// transaction, and publishes the new state.
func (d *Daemon) end(ctx context.Context, vm *store.VM, ins ...*store.Intent) error {
	if err := d.store.Write(ctx, func(tx *store.Tx) error {
		if err := tx.UpdateVM(vm); err != nil {
			return err
		}
		for _, in := range ins {
			if in == nil {
				continue
			}
			if err := tx.EndIntent(in.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
				return err
			}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("recording vm %s: %w", vm.Name, err)
	}
	d.publishVM(ctx, vm)
	return nil
}

func imageLock(id string) string { return "image/" + id }

// recoverVM finishes or undoes the operations whose intents are recorded
// for vm. The caller holds the VM's lock, so none of them is running. gone
// reports that the VM no longer exists afterwards (an undone create, a
// finished delete).
func (d *Daemon) recoverVM(ctx context.Context, vm *store.VM, ins []store.Intent) (gone bool, err error) {
	find := func(op string) *store.Intent {
		for i := range ins {
			if ins[i].Op == op {
				return &ins[i]
			}
		}
		return nil
	}
	ops := make([]string, 0, len(ins))
	for _, in := range ins {
		ops = append(ops, in.Op)
	}
	d.log.Info("recovering interrupted operation", "vm", vm.Name, "ops", ops, "state", vm.State)
	switch {
	case find(opDelete) != nil:
		if err := d.deleteLocked(ctx, vm, find(opDelete)); err != nil {
			return false, fmt.Errorf("finishing the interrupted delete of vm %s: %w", vm.Name, err)
		}
		return true, nil
	case find(opCreate) != nil:
		if err := d.undoCreate(ctx, vm); err != nil {
			return false, fmt.Errorf("undoing the interrupted create of vm %s: %w", vm.Name, err)
		}
		return true, nil
	}
	var errs []error
	if in := find(opSuspend); in != nil {
		if err := d.recoverSuspend(ctx, vm, in); err != nil {
			errs = append(errs, fmt.Errorf("recovering the interrupted suspend of vm %s: %w", vm.Name, err))
		}
	}
	if in := find(opRestore); in != nil {
		if err := d.recoverRestore(ctx, vm, in); err != nil {
			errs = append(errs, fmt.Errorf("recovering the interrupted restore of vm %s: %w", vm.Name, err))
		}
	}
	if in := find(opGrow); in != nil {
		if err := d.finishGrow(ctx, vm, in); err != nil {
			errs = append(errs, err)
		}
	}
	var lifecycle []*store.Intent
	for i := range ins {
		switch ins[i].Op {
		case opStart, opStop:
			lifecycle = append(lifecycle, &ins[i])
		case opGrow, opSuspend, opRestore:
		default:
			// Written by a newer build, or a bug: nothing here knows how
			// to finish it, and keeping it would block the VM for good.
			d.log.Error("dropping an intent of an unknown operation", "vm", vm.Name, "op", ins[i].Op, "data", string(ins[i].Data))
			lifecycle = append(lifecycle, &ins[i])
		}
	}
	if len(lifecycle) > 0 {
		reason := "start interrupted; stopped by bangerd"
		if find(opStop) != nil {
			reason = "stop interrupted; finished by bangerd"
		}
		if err := d.finishInterrupted(ctx, vm, reason, lifecycle); err != nil {
			errs = append(errs, err)
		}
	}
	return false, errors.Join(errs...)
}

// finishInterrupted ends an interrupted start or stop as a stop: a live
// process is stopped (gracefully, then forced), host resources released,
// state stopped, intents cleared with that last write.
func (d *Daemon) finishInterrupted(ctx context.Context, vm *store.VM, reason string, ins []*store.Intent) error {
	pid := livePID(vm)
	if pid > 0 {
		vm.State = api.StateStopping
		return d.stopWith(ctx, vm, pid, reason, ins...)
	}
	if vm.State != api.StateCreated {
		vm.State = api.StateStopping // finishStop records stopped
	}
	return d.finishStop(ctx, vm, reason, ins...)
}

// undoCreate removes what an interrupted create made: the VM never
// reached a recorded end, and its caller was told it failed.
func (d *Daemon) undoCreate(ctx context.Context, vm *store.VM) error {
	if err := d.removeDisks(ctx, vm); err != nil {
		return err
	}
	if err := d.store.DeleteVM(ctx, vm.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("forgetting vm %s: %w", vm.Name, err)
	}
	d.log.Info("undid interrupted create", "vm", vm.Name, "id", vm.ID)
	a := d.toAPI(ctx, *vm)
	d.events.publish(api.Event{Kind: api.EventVMDeleted, VM: &a, VMID: vm.ID})
	return nil
}

// removeDisks releases and removes the VM's disks and its directory,
// whatever of them is left: files already gone are fine.
func (d *Daemon) removeDisks(ctx context.Context, vm *store.VM) error {
	disk, err := d.diskOf(ctx, vm)
	if err != nil {
		return err
	}
	if st, err := d.storage.Deactivate(ctx, disk); err != nil {
		return fmt.Errorf("releasing disks of vm %s: %w", vm.Name, err)
	} else {
		disk.State = st
	}
	if err := d.storage.Remove(ctx, disk); err != nil {
		return fmt.Errorf("removing disks of vm %s: %w", vm.Name, err)
	}
	if err := d.removeVMDir(vm); err != nil {
		return err
	}
	return nil
}

// removeVMDir removes the VM's directory, which must be VMsDir/<id>.
func (d *Daemon) removeVMDir(vm *store.VM) error {
	if vm.Dir == "" {
		return nil
	}
	if filepath.Clean(vm.Dir) != filepath.Join(d.paths.VMsDir, vm.ID) {
		return fmt.Errorf("not removing %s: vm %s's directory should be %s", vm.Dir, vm.Name, filepath.Join(d.paths.VMsDir, vm.ID))
	}
	if err := os.RemoveAll(vm.Dir); err != nil {
		return fmt.Errorf("removing %s: %w", vm.Dir, err)
	}
	return nil
}

// finishGrow repeats an interrupted work-disk grow (truncate and resize2fs
// are idempotent) and records the new size; when that is impossible the VM
// keeps its recorded size and says why.
func (d *Daemon) finishGrow(ctx context.Context, vm *store.VM, in *store.Intent) error {
	var g growData
	if err := json.Unmarshal(in.Data, &g); err != nil || g.Bytes <= 0 {
		d.log.Error("dropping an unreadable work-disk grow intent", "vm", vm.Name, "data", string(in.Data), "err", err)
		return d.end(ctx, vm, in)
	}
	if err := d.storage.GrowWorkDisk(ctx, workDisk(vm), g.Bytes); err != nil {
		d.log.Warn("could not finish an interrupted work-disk grow", "vm", vm.Name, "bytes", g.Bytes, "err", err)
		vm.LastError = fmt.Sprintf("growing the work disk was interrupted and could not be finished: %v", err)
		return d.end(ctx, vm, in)
	}
	vm.WorkDiskBytes = g.Bytes
	d.log.Info("finished interrupted work-disk grow", "vm", vm.Name, "bytes", g.Bytes)
	return d.end(ctx, vm, in)
}

// recoverIntentsLocked runs recoverVM when vm has intents; the caller holds
// the VM's lock. vm is re-read afterwards.
func (d *Daemon) recoverIntentsLocked(ctx context.Context, vm *store.VM) (gone bool, err error) {
	ins, err := d.store.VMIntents(ctx, vm.ID)
	if err != nil {
		return false, fmt.Errorf("reading intents of vm %s: %w", vm.Name, err)
	}
	if len(ins) == 0 {
		return false, nil
	}
	gone, err = d.recoverVM(ctx, vm, ins)
	if gone || err != nil {
		return gone, err
	}
	cur, err := d.store.GetVM(ctx, vm.ID)
	if errors.Is(err, store.ErrNotFound) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	*vm = cur
	return false, nil
}

// recoverImages finishes or undoes interrupted image operations whose lock
// is free. atStart says no build can be running in this process.
func (d *Daemon) recoverImages(ctx context.Context, atStart bool) {
	ins, err := d.store.ListIntents(ctx)
	if err != nil {
		d.log.Error("reconcile: listing intents", "err", err)
		return
	}
	for i := range ins {
		in := &ins[i]
		if in.ImageID == "" {
			continue
		}
		unlock, ok := d.locks.tryLock(imageLock(in.ImageID))
		if !ok {
			continue // the operation is running
		}
		if err := d.recoverImage(ctx, in, atStart); err != nil {
			d.log.Error("recovering interrupted image operation", "image", in.ImageID, "op", in.Op, "err", err)
		}
		unlock()
	}
}

func (d *Daemon) recoverImage(ctx context.Context, in *store.Intent, atStart bool) error {
	var data imageData
	if err := json.Unmarshal(in.Data, &data); err != nil {
		d.log.Error("dropping an unreadable image intent", "image", in.ImageID, "op", in.Op, "data", string(in.Data), "err", err)
		return d.store.EndIntent(ctx, in.ID)
	}
	switch in.Op {
	case opImageRegister, opImageBuild:
		if _, err := d.store.GetImage(ctx, in.ImageID); err == nil {
			return d.store.EndIntent(ctx, in.ID) // it was recorded: done
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if in.Op == opImageBuild && atStart {
			d.removeBuildStaging(ctx)
		}
		if err := d.removeImageDir(in.ImageID, data.Dir); err != nil {
			return err
		}
		d.log.Info("undid interrupted image "+in.Op[len("image-"):], "image", data.Name, "id", in.ImageID)
	case opImageDelete:
		if err := d.removeImageFiles(in.ImageID, data.Dir); err != nil {
			return err
		}
		d.log.Info("finished interrupted image delete", "image", data.Name, "id", in.ImageID)
	default:
		d.log.Error("dropping an intent of an unknown image operation", "image", in.ImageID, "op", in.Op)
	}
	return d.store.EndIntent(ctx, in.ID)
}

// removeImageDir removes an image's own directory, which must be
// ImagesDir/<id>.
func (d *Daemon) removeImageDir(id, dir string) error {
	if dir == "" {
		return nil
	}
	if filepath.Clean(dir) != filepath.Join(d.paths.ImagesDir, id) {
		return fmt.Errorf("not removing %s: image %s's directory should be %s", dir, id, filepath.Join(d.paths.ImagesDir, id))
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("removing %s: %w", dir, err)
	}
	return nil
}

// removeImageFiles removes a deleted image's directory and its work-disk
// seeds.
func (d *Daemon) removeImageFiles(id, dir string) error {
	err := d.removeImageDir(id, dir)
	n, serr := d.storage.RemoveSeeds(id)
	if n > 0 {
		d.log.Info("removed work-disk seeds of deleted image", "image", id, "seeds", n)
	}
	return errors.Join(err, serr)
}

// removeBuildStaging asks the privileged side to remove the root-owned
// build staging directories an interrupted build left: those made before
// this daemon started (the privileged side refuses other users' ones).
func (d *Daemon) removeBuildStaging(ctx context.Context) {
	host, ok := d.host.(imageBuildHost)
	if !ok {
		return
	}
	matches, _ := filepath.Glob(filepath.Join(hostops.StagingBase, "banger-build-*"))
	for _, m := range matches {
		if fi, err := os.Lstat(m); err != nil || !fi.IsDir() || !fi.ModTime().Before(d.started) {
			continue
		}
		if err := host.ImageRemoveStaging(ctx, m); err != nil {
			d.log.Debug("leaving a build staging directory", "dir", m, "err", err)
			continue
		}
		d.log.Info("removed the staging of an interrupted image build", "dir", m)
	}
}
