package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"banger/internal/agent"
	"banger/internal/api"
)

// rpcExec prepares `banger vm exec`: the VM must be running and its agent
// must speak the exec protocol. It counts as use for idle detection and
// returns where the client dials the agent itself, so the command's streams
// never pass through the daemon.
func (d *Daemon) rpcExec(ctx context.Context, raw json.RawMessage) (any, error) {
	var p api.VMRef
	if err := decodeParams(api.MethodVMExec, raw, &p); err != nil {
		return nil, err
	}
	vm, err := d.resolve(ctx, p.Ref)
	if err != nil {
		return nil, err
	}
	if vm, err = d.wakeForUse(ctx, vm); err != nil {
		return nil, err
	}
	if vm.State != api.StateRunning {
		return nil, withKind(ErrConflict, "vm %s is %s; start it with `banger vm start %s`", vm.Name, vm.State, vm.Name)
	}
	actx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	hz, _, err := agentClient(&vm).Health(actx)
	if err != nil {
		return nil, withKind(ErrUnavailable, "the agent in vm %s does not answer: %v", vm.Name, err)
	}
	av := d.toAPI(ctx, vm)
	if hz.Protocol < agent.ProtocolExec {
		return nil, withKind(ErrConflict, "%s", oldAgentMessage(av.Image, "exec"))
	}
	d.touch(ctx, vm.ID)
	return api.ExecTarget{VM: av, VsockPath: vsockPath(&vm), AgentPort: agent.DefaultPort, Protocol: hz.Protocol}, nil
}

// oldAgentMessage refuses a feature the guest's agent lacks.
func oldAgentMessage(image, feature string) string {
	return fmt.Sprintf("the agent in image %s is older than this banger (it has no %s); rebuild the image with `banger image build debian --name %s` (delete the old one first) and re-create the VM", image, feature, image)
}
