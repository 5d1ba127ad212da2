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
	return h, nil
}
