//go:build !banger_front

package cli

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"time"

	"banger/internal/config"
	"banger/internal/hostops"
)

// resolverHost is the part of the privileged seam `dns setup` uses
// (implemented by *hostops.Client).
type resolverHost interface {
	ResolverLinkApply(ctx context.Context, bridge string, addr netip.AddrPort) error
	ResolverLinkRevert(ctx context.Context, bridge string) (bool, error)
	DnsmasqApply(ctx context.Context, flavor string, addr netip.AddrPort) (hostops.DnsmasqResult, error)
	DnsmasqRevert(ctx context.Context, flavor string) (hostops.DnsmasqResult, error)
}

// dnsSetup is one `banger dns setup` run.
type dnsSetup struct {
	cfg          config.Config
	stateDir     string
	out          io.Writer
	host         resolverHost
	detect       func() hostops.HostResolver
	bridgeExists func(name string) bool
	forced       string // "auto", hostops.ResolverResolved or hostops.ResolverDnsmasq
	now          func() time.Time
	// problem says why banger's server does not answer on dns_listen_addr
	// (the port is taken), "" when it does or will.
	problem string
}

// warnProblem says, before any step, that the steps alone will not make
// NAME.vm resolve.
func (s *dnsSetup) warnProblem() {
	if s.problem != "" {
		fmt.Fprintf(s.out, "Warning: %s.\nUntil it does, the steps below point the resolver at a server that is not banger's.\n\n", s.problem)
	}
}

// resolver is the detected resolver, or the one --resolver names.
func (s *dnsSetup) resolver() hostops.HostResolver {
	r := s.detect()
	switch s.forced {
	case hostops.ResolverResolved:
		if r.Kind != hostops.ResolverResolved {
			return hostops.HostResolver{Kind: hostops.ResolverResolved, Why: "systemd-resolved (--resolver resolved)"}
		}
	case hostops.ResolverDnsmasq:
		if r.Kind != hostops.ResolverDnsmasq {
			return hostops.HostResolver{Kind: hostops.ResolverDnsmasq, Flavor: hostops.DnsmasqPlain, Why: "dnsmasq (--resolver dnsmasq)"}
		}
	}
	return r
}

// bridgeAddr is banger's DNS server on the bridge address.
func (s *dnsSetup) bridgeAddr() netip.AddrPort {
	return netip.AddrPortFrom(s.cfg.BridgeIP, s.cfg.DNSListenAddr.Port())
}

func (s *dnsSetup) printCheck() {
	fmt.Fprintf(s.out, "\nCheck banger's server directly (NAME is a running VM):\n  dig @%s -p %d NAME.vm\n", s.cfg.DNSListenAddr.Addr(), s.cfg.DNSListenAddr.Port())
	fmt.Fprintln(s.out, "and through the host resolver once the steps are in place:\n  getent hosts NAME.vm")
}

// print shows the steps without changing anything.
func (s *dnsSetup) print() error {
	r := s.resolver()
	fmt.Fprintf(s.out, "Host resolver: %s\n", r.Why)
	if s.problem != "" {
		s.warnProblem()
	} else {
		fmt.Fprintf(s.out, "banger's DNS server answers for vm. on %s and %s.\n\n", s.cfg.DNSListenAddr, s.bridgeAddr())
	}
	if r.Kind == hostops.ResolverResolved {
		fmt.Fprintf(s.out, "Steps (as root):\n  resolvectl dns %s %s\n  resolvectl domain %s %s\n", s.cfg.BridgeName, s.bridgeAddr(), s.cfg.BridgeName, hostops.ResolverDomain)
		fmt.Fprintln(s.out, "resolved forgets these when the bridge goes away; `banger dns setup --apply` performs them and")
		fmt.Fprintln(s.out, "makes bangerd re-apply them whenever it re-creates the bridge.")
		if !s.bridgeExists(s.cfg.BridgeName) {
			fmt.Fprintf(s.out, "Bridge %s does not exist yet: bangerd creates it when it starts the first VM.\n", s.cfg.BridgeName)
		}
	} else {
		path, err := hostops.DnsmasqPath(r.Flavor)
		if err != nil {
			return failf("%v", err)
		}
		fmt.Fprintf(s.out, "Steps (as root): put this line in %s\n  %s\nthen %s.\n", path, hostops.DnsmasqLine(s.cfg.DNSListenAddr), dnsmasqReload(r.Flavor))
		fmt.Fprintln(s.out, "`banger dns setup --apply` writes the file.")
	}
	s.printCheck()
	return nil
}

func dnsmasqReload(flavor string) string {
	if flavor == hostops.DnsmasqNetworkManager {
		return "reload NetworkManager (`sudo systemctl reload NetworkManager`)"
	}
	return "restart dnsmasq (`sudo systemctl restart dnsmasq`)"
}

// apply performs the steps through the privileged seam and records them.
func (s *dnsSetup) apply(ctx context.Context) error {
	r := s.resolver()
	now := time.Now
	if s.now != nil {
		now = s.now
	}
	fmt.Fprintf(s.out, "Host resolver: %s\n", r.Why)
	s.warnProblem()
	var rec hostops.ResolverSetup
	if r.Kind == hostops.ResolverResolved {
		bridge, addr := s.cfg.BridgeName, s.bridgeAddr()
		rec = hostops.ResolverSetup{Resolver: hostops.ResolverResolved, Bridge: bridge, Addr: addr.String(), AppliedAt: now().UTC()}
		if s.bridgeExists(bridge) {
			if err := s.host.ResolverLinkApply(ctx, bridge, addr); err != nil {
				return failf("applying resolved settings to %s: %v", bridge, err)
			}
			fmt.Fprintf(s.out, "Applied: resolvectl dns %s %s; resolvectl domain %s %s\n", bridge, addr, bridge, hostops.ResolverDomain)
		} else {
			fmt.Fprintf(s.out, "Bridge %s does not exist yet, so resolvectl has no link to configure; bangerd applies the settings when it creates the bridge (at the first VM start).\n", bridge)
		}
		if err := hostops.SaveResolverSetup(s.stateDir, rec); err != nil {
			return failf("%v", err)
		}
		fmt.Fprintln(s.out, "Recorded: bangerd re-applies them whenever it re-creates the bridge.")
	} else {
		res, err := s.host.DnsmasqApply(ctx, r.Flavor, s.cfg.DNSListenAddr)
		if err != nil {
			return failf("writing the dnsmasq drop-in: %v", err)
		}
		rec = hostops.ResolverSetup{Resolver: hostops.ResolverDnsmasq, Flavor: r.Flavor, File: res.Path, Addr: s.cfg.DNSListenAddr.String(), AppliedAt: now().UTC()}
		if err := hostops.SaveResolverSetup(s.stateDir, rec); err != nil {
			return failf("%v", err)
		}
		verb := "Wrote"
		if !res.Changed {
			verb = "Already in place"
		}
		fmt.Fprintf(s.out, "%s: %s (%s)\nNow %s.\n", verb, res.Path, hostops.DnsmasqLine(s.cfg.DNSListenAddr), dnsmasqReload(r.Flavor))
	}
	s.printCheck()
	return nil
}

// revert undoes what the record says was applied (or, without a record,
// what applies to the detected resolver) and removes the record.
func (s *dnsSetup) revert(ctx context.Context) error {
	rec, ok, err := hostops.LoadResolverSetup(s.stateDir)
	if err != nil {
		return failf("%v", err)
	}
	if !ok {
		r := s.resolver()
		rec = hostops.ResolverSetup{Resolver: r.Kind, Bridge: s.cfg.BridgeName, Flavor: r.Flavor}
		fmt.Fprintf(s.out, "No record of `banger dns setup --apply`; reverting for %s anyway.\n", r.Why)
	}
	switch rec.Resolver {
	case hostops.ResolverResolved:
		reverted, err := s.host.ResolverLinkRevert(ctx, rec.Bridge)
		if err != nil {
			return failf("reverting resolved settings of %s: %v", rec.Bridge, err)
		}
		if reverted {
			fmt.Fprintf(s.out, "Reverted: resolvectl revert %s\n", rec.Bridge)
		} else {
			fmt.Fprintf(s.out, "Bridge %s does not exist: resolved holds no settings for it.\n", rec.Bridge)
		}
	case hostops.ResolverDnsmasq:
		res, err := s.host.DnsmasqRevert(ctx, rec.Flavor)
		if err != nil {
			return failf("removing the dnsmasq drop-in: %v", err)
		}
		if res.Changed {
			fmt.Fprintf(s.out, "Removed %s; now %s.\n", res.Path, dnsmasqReload(rec.Flavor))
		} else {
			fmt.Fprintf(s.out, "%s was not there.\n", res.Path)
		}
	default:
		return failf("unknown resolver %q in %s", rec.Resolver, hostops.ResolverSetupFile)
	}
	if err := hostops.RemoveResolverSetup(s.stateDir); err != nil {
		return failf("%v", err)
	}
	return nil
}
