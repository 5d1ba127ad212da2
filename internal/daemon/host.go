package daemon

import (
	"context"
	"net/netip"

	"banger/internal/storage"
)

// Host is the privileged seam as the daemon needs it (implemented by
// *hostops.Client).
type Host interface {
	Mode() string
	EnsureStateDirs(ctx context.Context, dirs ...string) error
	EnsureBridge(ctx context.Context, name string, ip netip.Addr, prefix netip.Prefix) (bool, error)
	CreateTap(ctx context.Context, name, bridge string) error
	DeleteTap(ctx context.Context, name string) error
	RenameTap(ctx context.Context, from, to string) error
	NATEnsure(ctx context.Context, bridge string, prefix netip.Prefix) (bool, error)
	NATAdd(ctx context.Context, addr netip.Addr) error
	NATRemove(ctx context.Context, addr netip.Addr) error
	storage.Host
}

func (d *Daemon) hostMode() string {
	if d.host == nil {
		return "none"
	}
	return d.host.Mode()
}
