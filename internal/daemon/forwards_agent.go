package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/firecracker"
	"banger/internal/forward"
)

// agentForwards is the forward manager's real backend: host listeners from
// internal/forward whose connections go over the VM's vsock to its agent,
// which connects to the guest's loopback port.
type agentForwards struct {
	log *slog.Logger
	// wake makes the VM run before a connection is tunnelled: a suspended
	// or paused VM is woken by a connection to one of its forwards.
	wake func(ctx context.Context, id string) error
}

func (b agentForwards) listen(ctx context.Context, addr string, vm fwdVM, guestPort int) (heldListener, error) {
	path := vm.VsockPath
	dial := func(ctx context.Context) (net.Conn, error) {
		if b.wake != nil {
			if err := b.wake(ctx, vm.ID); err != nil {
				return nil, err
			}
		}
		conn, err := firecracker.DialVsock(ctx, path, agent.DefaultPort)
		if err != nil {
			return nil, fmt.Errorf("dialling the agent of vm %s: %w", vm.Name, err)
		}
		return agent.DialGuestPort(ctx, conn, uint16(guestPort))
	}
	f, err := forward.Listen(ctx, addr, dial, b.log.With("vm", vm.Name, "guest_port", guestPort))
	if err != nil {
		return nil, err
	}
	return f, nil
}

func (agentForwards) listeners(ctx context.Context, vm fwdVM) ([]api.GuestListener, error) {
	path := vm.VsockPath
	cl := agent.NewClient(func(ctx context.Context) (net.Conn, error) {
		return firecracker.DialVsock(ctx, path, agent.DefaultPort)
	})
	ls, err := cl.Ports(ctx)
	if errors.Is(err, agent.ErrPortsUnsupported) {
		return nil, fmt.Errorf("%w: %v", errOldAgent, err)
	}
	if err != nil {
		return nil, err
	}
	out := make([]api.GuestListener, 0, len(ls))
	for _, l := range ls {
		out = append(out, api.GuestListener{Proto: l.Proto, Addr: l.Addr, Port: int(l.Port)})
	}
	return out, nil
}
