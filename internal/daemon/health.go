package daemon

import (
	"context"
	"encoding/json"
	"time"

	"banger/internal/api"
)

func (d *Daemon) rpcHealth(ctx context.Context, raw json.RawMessage) (any, error) {
	var p api.VMRef
	if err := decodeParams(api.MethodVMHealth, raw, &p); err != nil {
		return nil, err
	}
	vm, err := d.resolve(ctx, p.Ref)
	if err != nil {
		return nil, err
	}
	h := api.Health{VM: vm.Name, State: vm.State}
	if vm.State != api.StateRunning {
		h.Reason = "vm is " + vm.State
		return h, nil
	}
	actx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	hz, rtt, err := agentClient(&vm).Health(actx)
	if err != nil {
		h.Reason = err.Error()
		return h, nil
	}
	h.Healthy = true
	h.RTTMillis = float64(rtt.Microseconds()) / 1000
	h.UptimeS, h.Version, h.Hostname = hz.UptimeS, hz.Version, hz.Hostname
	d.touch(ctx, vm.ID)
	return h, nil
}

// touch records that a user reached the VM (vm health, vm ssh). It never
// waits behind a long operation on the VM: if the VM is busy it skips.
func (d *Daemon) touch(ctx context.Context, id string) {
	unlock, ok := d.locks.tryLock(id)
	if !ok {
		return
	}
	defer unlock()
	vm, err := d.store.GetVM(ctx, id)
	if err != nil {
		return
	}
	vm.LastUsedAt = time.Now()
	if err := d.store.UpdateVM(ctx, &vm); err != nil {
		d.log.Warn("recording last use", "vm", vm.Name, "err", err)
	}
}
