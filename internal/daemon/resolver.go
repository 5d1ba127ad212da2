package daemon

import (
	"context"
	"net/netip"

	"banger/internal/hostops"
)

// resolverHost is the privileged op re-applying systemd-resolved's link
// settings (implemented by *hostops.Client).
type resolverHost interface {
	ResolverLinkApply(ctx context.Context, bridge string, addr netip.AddrPort) error
}

// reapplyResolver re-applies `banger dns setup --apply`'s systemd-resolved
// settings to a bridge that was just (re)created: resolved forgets per-link
// settings when a link goes away. Failures are logged, never fatal.
func (d *Daemon) reapplyResolver(ctx context.Context) {
	rec, ok, err := hostops.LoadResolverSetup(d.paths.StateDir)
	if err != nil {
		d.log.Warn("resolver settings not re-applied", "op", "resolver-reapply", "err", err)
		return
	}
	if !ok || rec.Resolver != hostops.ResolverResolved {
		return
	}
	bridge := d.cfg.BridgeName
	if rec.Bridge != bridge {
		d.log.Warn("resolver settings not re-applied: recorded for another bridge; run `banger dns setup --apply` again",
			"op", "resolver-reapply", "bridge", bridge, "recorded", rec.Bridge)
		return
	}
	h, ok := d.host.(resolverHost)
	if !ok {
		d.log.Warn("resolver settings not re-applied: the privileged seam has no resolver op", "op", "resolver-reapply", "bridge", bridge)
		return
	}
	addr := netip.AddrPortFrom(d.cfg.BridgeIP, d.cfg.DNSListenAddr.Port())
	if err := h.ResolverLinkApply(ctx, bridge, addr); err != nil {
		d.log.Warn("resolver settings not re-applied", "op", "resolver-reapply", "bridge", bridge, "addr", addr.String(), "err", err)
		return
	}
	d.log.Info("re-applied resolver settings to the new bridge", "op", "resolver-reapply", "bridge", bridge, "addr", addr.String(), "domain", hostops.ResolverDomain)
}
