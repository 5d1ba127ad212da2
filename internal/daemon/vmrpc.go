package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"banger/internal/api"
	"banger/internal/storage"
	"banger/internal/store"
)

func (d *Daemon) methods() map[string]handler {
	return d.withTrim(d.withProgressEnds(map[string]handler{
		api.MethodDaemonStatus:  d.status,
		api.MethodDaemonStop:    d.stopDaemon,
		api.MethodVMCreate:      d.rpcCreate,
		api.MethodVMStart:       d.rpcStart,
		api.MethodVMStop:        d.rpcStop,
		api.MethodVMRestart:     d.rpcRestart,
		api.MethodVMKill:        d.rpcKill,
		api.MethodVMDelete:      d.rpcDelete,
		api.MethodVMSet:         d.rpcSet,
		api.MethodVMList:        d.rpcList,
		api.MethodVMGet:         d.rpcGet,
		api.MethodVMHealth:      d.rpcHealth,
		api.MethodVMStats:       d.rpcStats,
		api.MethodVMTouch:       d.rpcTouch,
		api.MethodVMExec:        d.rpcExec,
		api.MethodVMPorts:       d.rpcPorts,
		api.MethodVMPause:       d.rpcPause,
		api.MethodVMResume:      d.rpcResume,
		api.MethodVMSuspend:     d.rpcSuspend,
		api.MethodImageRegister: d.rpcImageRegister,
		api.MethodImageList:     d.rpcImageList,
		api.MethodImageDelete:   d.rpcImageDelete,
		api.MethodImageBuild:    d.rpcImageBuild,
	}))
}

// Per-VM file names inside the VM directory. Kept short: socket paths must
// fit in 107 bytes.
const (
	fileAPISock  = "fc.sock"
	fileVsock    = "v.sock"
	fileConsole  = "console.log"
	fileFCLog    = "firecracker.log"
	fileWorkDisk = "work.ext4"
)

func apiSock(vm *store.VM) string   { return filepath.Join(vm.Dir, fileAPISock) }
func vsockPath(vm *store.VM) string { return filepath.Join(vm.Dir, fileVsock) }
func workDisk(vm *store.VM) string  { return filepath.Join(vm.Dir, fileWorkDisk) }

// resolve finds a VM by exact name, exact ID, then unique ID prefix.
func (d *Daemon) resolve(ctx context.Context, ref string) (store.VM, error) {
	if ref == "" {
		return store.VM{}, invalidf("vm reference is empty")
	}
	if vm, err := d.store.GetVMByName(ctx, ref); err == nil {
		return vm, nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return store.VM{}, err
	}
	if vm, err := d.store.GetVM(ctx, ref); err == nil {
		return vm, nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return store.VM{}, err
	}
	vms, err := d.store.ListVMs(ctx)
	if err != nil {
		return store.VM{}, err
	}
	var match []store.VM
	for _, v := range vms {
		if strings.HasPrefix(v.ID, ref) {
			match = append(match, v)
		}
	}
	switch len(match) {
	case 1:
		return match[0], nil
	case 0:
		return store.VM{}, withKind(ErrNotFound, "no vm named %q", ref)
	}
	return store.VM{}, withKind(ErrInvalid, "vm reference %q is ambiguous", ref)
}

func (d *Daemon) toAPI(ctx context.Context, vm store.VM) api.VM {
	names := map[string]string{}
	if img, err := d.store.GetImage(ctx, vm.ImageID); err == nil {
		names[img.ID] = img.Name
	}
	return d.toAPIWith(vm, names)
}

// saveVM writes the VM and publishes its new state. Every state change
// that crash recovery depends on goes through it, so its caller fails
// with the error.
func (d *Daemon) saveVM(ctx context.Context, vm *store.VM) error {
	if err := d.store.UpdateVM(ctx, vm); err != nil {
		return fmt.Errorf("recording vm %s: %w", vm.Name, err)
	}
	d.publishVM(ctx, vm)
	return nil
}

// publishVM tells event subscribers about the VM's recorded state.
func (d *Daemon) publishVM(ctx context.Context, vm *store.VM) {
	a := d.toAPI(ctx, *vm)
	d.events.publish(api.Event{Kind: api.EventVMState, Time: time.Now(), VM: &a, VMID: vm.ID})
}

// vmStorage decodes the VM's storage state (the store keeps it as JSON).
func vmStorage(vm *store.VM) (storage.State, error) {
	st, err := storage.ParseState(vm.Storage)
	if err != nil {
		return storage.State{}, fmt.Errorf("vm %s: %w", vm.Name, err)
	}
	return st, nil
}

// setStorage puts st into vm (written with the VM's next save).
func setStorage(vm *store.VM, st storage.State) error {
	b, err := st.Encode()
	if err != nil {
		return fmt.Errorf("vm %s: %w", vm.Name, err)
	}
	vm.Storage = b
	return nil
}

func (d *Daemon) progress(vm *store.VM, start time.Time, stage, msg string) {
	a := api.VM{ID: vm.ID, Name: vm.Name, State: vm.State}
	d.events.publish(api.Event{Kind: api.EventVMProgress, Time: time.Now(), VM: &a, VMID: vm.ID,
		Stage: stage, Message: msg, Elapsed: time.Since(start).Seconds()})
}

func (d *Daemon) rpcList(ctx context.Context, raw json.RawMessage) (any, error) {
	var p api.VMListParams
	if err := decodeParams(api.MethodVMList, raw, &p); err != nil {
		return nil, err
	}
	vms, err := d.store.ListVMs(ctx)
	if err != nil {
		return nil, err
	}
	names := d.imageNames(ctx)
	if p.Table {
		return tableOf(vms, names), nil
	}
	out := api.VMList{VMs: make([]api.VM, 0, len(vms))}
	for _, v := range vms {
		a := d.toAPIWith(v, names)
		out.VMs = append(out.VMs, a)
	}
	return out, nil
}

// tableOf is vm.list's table view: toAPIWith's values of the members
// VMRow has, without parsing each VM's storage state or listing its
// forwards (the full view's cost, for columns the table does not show).
func tableOf(vms []store.VM, names map[string]string) api.VMTable {
	out := api.VMTable{VMs: make([]api.VMRow, 0, len(vms))}
	for i := range vms {
		v := &vms[i]
		out.VMs = append(out.VMs, api.VMRow{
			ID: v.ID, Name: v.Name, State: v.State, Image: imageName(names, v.ImageID), VCPU: v.VCPU, MemoryMiB: v.MemoryMiB,
			DiskBytes: v.DiskBytes, WorkDiskBytes: v.WorkDiskBytes, NAT: v.NAT, IP: v.IP.String(),
			CreatedAt: v.CreatedAt, LastUsedAt: v.LastUsedAt, Snapshot: snapshotAPI(v),
		})
	}
	return out
}

// imageName is the name of image id, or the id when the image is gone.
func imageName(names map[string]string, id string) string {
	if n := names[id]; n != "" {
		return n
	}
	return id
}

func (d *Daemon) imageNames(ctx context.Context) map[string]string {
	m := map[string]string{}
	imgs, err := d.store.ListImages(ctx)
	if err != nil {
		return m
	}
	for _, im := range imgs {
		m[im.ID] = im.Name
	}
	return m
}

func (d *Daemon) toAPIWith(v store.VM, names map[string]string) api.VM {
	vm := v
	st, err := vmStorage(&vm)
	if err != nil {
		d.log.Warn("showing vm with unreadable storage state", "vm", vm.Name, "err", err)
	}
	out := api.VM{
		ID: vm.ID, Name: vm.Name, State: vm.State, LastError: vm.LastError, StopReason: vm.StopReason,
		Image: imageName(names, vm.ImageID), VCPU: vm.VCPU, MemoryMiB: vm.MemoryMiB, DiskBytes: vm.DiskBytes,
		WorkDiskBytes: vm.WorkDiskBytes, NAT: vm.NAT, IP: vm.IP.String(), MAC: vm.MAC, Tap: vm.Tap,
		CID: vm.CID, PID: vm.PID, Dir: vm.Dir, APISocket: apiSock(&vm), VsockPath: vsockPath(&vm),
		RootDisk: st.RootDisk, WorkDisk: workDisk(&vm), StorageDriver: st.Driver,
		DNSName: vm.Name + ".vm", CreatedAt: vm.CreatedAt, StartedAt: vm.StartedAt, LastUsedAt: vm.LastUsedAt,
		PendingChanges: vm.Pending, Forwards: d.fwd.listOrNil(vm.ID), Snapshot: snapshotAPI(&vm),
	}
	return out
}

func (d *Daemon) rpcGet(ctx context.Context, raw json.RawMessage) (any, error) {
	var p api.VMRef
	if err := decodeParams(api.MethodVMGet, raw, &p); err != nil {
		return nil, err
	}
	vm, err := d.resolve(ctx, p.Ref)
	if err != nil {
		return nil, err
	}
	return d.toAPI(ctx, vm), nil
}

// rpcTouch records a use of the VM (vm ssh calls it before connecting);
// a suspended or paused VM is woken first, so the answer is the running VM.
func (d *Daemon) rpcTouch(ctx context.Context, raw json.RawMessage) (any, error) {
	if err := d.wakeRef(ctx, api.MethodVMTouch, raw); err != nil {
		return nil, err
	}
	_, vm, unlock, err := lockedParams(ctx, d, api.MethodVMTouch, raw, func(p *api.VMRef) string { return p.Ref })
	if err != nil {
		return nil, err
	}
	defer unlock()
	vm.LastUsedAt = time.Now()
	if err := d.store.UpdateVM(ctx, &vm); err != nil {
		return nil, err
	}
	return d.toAPI(ctx, vm), nil
}
