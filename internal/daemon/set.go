package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/store"
)

func (d *Daemon) rpcSet(ctx context.Context, raw json.RawMessage) (any, error) {
	var p api.VMSetParams
	if err := decodeParams(api.MethodVMSet, raw, &p); err != nil {
		return nil, err
	}
	if p.VCPU != nil && (*p.VCPU < 1 || *p.VCPU > 32) {
		return nil, invalidf("vcpu %d is out of range; use 1 to 32", *p.VCPU)
	}
	if p.MemoryMiB != nil {
		if *p.MemoryMiB < 128 {
			return nil, invalidf("memory %d MiB is too small; use at least 128", *p.MemoryMiB)
		}
		if host := hostMemMiB(); host > 0 && *p.MemoryMiB >= host {
			return nil, invalidf("memory %d MiB is not below this host's %d MiB", *p.MemoryMiB, host)
		}
	}
	var work int64
	if p.WorkDiskSize != "" {
		var err error
		if work, err = config.ParseSize(p.WorkDiskSize); err != nil {
			return nil, invalidf("work disk size %q: %v", p.WorkDiskSize, err)
		}
	}
	if p.VCPU == nil && p.MemoryMiB == nil && p.NAT == nil && work == 0 {
		return nil, invalidf("nothing to change; give vcpu, memory, nat or work_disk_size")
	}
	vm, unlock, err := d.lockedVM(ctx, p.Ref)
	if err != nil {
		return nil, err
	}
	defer unlock()
	running := vm.State == api.StateRunning || vm.State == api.StateStarting || vm.State == api.StatePaused
	var notices []string
	if vm.State == api.StateSuspended && ((p.VCPU != nil && *p.VCPU != vm.VCPU) || (p.MemoryMiB != nil && *p.MemoryMiB != vm.MemoryMiB) || work > vm.WorkDiskBytes) {
		if !p.DiscardSnapshot {
			return nil, invalidf("vm %s is suspended: changing its vcpu, memory or work disk invalidates its snapshot (its memory, running programs and unsaved state are lost); give --discard-snapshot to do it anyway, or start it first", vm.Name)
		}
		n, err := d.discardSnapshotLocked(ctx, &vm, "snapshot discarded by vm set")
		if err != nil {
			return nil, err
		}
		notices = append(notices, n)
	}
	if work > 0 {
		if running {
			return nil, withKind(ErrConflict, "vm %s is running; stop it before growing its work disk", vm.Name)
		}
		if work < vm.WorkDiskBytes {
			return nil, invalidf("work disk of %s is %s; shrinking to %s is not supported", vm.Name, config.FormatSize(vm.WorkDiskBytes), config.FormatSize(work))
		}
	}
	pending := func(what string) {
		if running && !slices.Contains(vm.Pending, what) {
			vm.Pending = append(vm.Pending, what)
		}
	}
	if p.VCPU != nil && *p.VCPU != vm.VCPU {
		vm.VCPU = *p.VCPU
		pending("vcpu")
	}
	if p.MemoryMiB != nil && *p.MemoryMiB != vm.MemoryMiB {
		vm.MemoryMiB = *p.MemoryMiB
		pending("memory")
	}
	if running && (p.VCPU != nil || p.MemoryMiB != nil) {
		notices = append(notices, "vcpu and memory apply at the next start (banger vm restart "+vm.Name+")")
	}
	rv := newReverter(d.log)
	defer rv.fail()
	if p.NAT != nil && *p.NAT != vm.NAT {
		if running {
			if *p.NAT {
				if err := d.ensureNAT(ctx); err != nil {
					return nil, err
				}
				if err := d.host.NATAdd(ctx, vm.IP); err != nil {
					return nil, fmt.Errorf("enabling NAT for vm %s: %w", vm.Name, err)
				}
				rv.add("disable nat again", func(ctx context.Context) error { return d.host.NATRemove(ctx, vm.IP) })
			} else {
				if err := d.host.NATRemove(ctx, vm.IP); err != nil {
					return nil, fmt.Errorf("disabling NAT for vm %s: %w", vm.Name, err)
				}
				rv.add("enable nat again", func(ctx context.Context) error { return d.host.NATAdd(ctx, vm.IP) })
			}
		}
		vm.NAT = *p.NAT
	}
	vm.LastUsedAt = time.Now()
	if work > vm.WorkDiskBytes {
		// Recorded before the grow: a daemon killed during it finishes
		// the grow at start-up (truncate and resize2fs are idempotent).
		// The other changes are written with the grow's end, so a failed
		// grow changes nothing in the store.
		data, err := intentData(growData{Bytes: work})
		if err != nil {
			return nil, err
		}
		in := &store.Intent{VMID: vm.ID, Op: opGrow, Data: data}
		if err := d.store.BeginIntent(ctx, in); err != nil {
			return nil, fmt.Errorf("recording the work-disk grow of vm %s: %w", vm.Name, err)
		}
		if err := d.storage.GrowWorkDisk(ctx, workDisk(&vm), work); err != nil {
			// A failed grow leaves at most a longer file with the old
			// filesystem, which boots as before; retrying finishes it.
			if eerr := d.store.EndIntent(context.WithoutCancel(ctx), in.ID); eerr != nil {
				d.log.Error("clearing the intent of a failed work-disk grow", "vm", vm.Name, "err", eerr)
			}
			return nil, fmt.Errorf("growing work disk of vm %s: %w", vm.Name, err)
		}
		vm.WorkDiskBytes = work
		if err := d.end(ctx, &vm, in); err != nil {
			return nil, err
		}
	} else if err := d.saveVM(ctx, &vm); err != nil {
		return nil, err
	}
	rv.success()
	return api.VMResult{VM: d.toAPI(ctx, vm), Notices: notices}, nil
}
