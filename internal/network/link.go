package network

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// CheckCIDR refuses a VM subnet that is too small for one guest or that
// overlaps an address or route already on the host that does not belong to
// bridge (a VPN's, Docker's), naming the interface or route it collides with.
func CheckCIDR(prefix netip.Prefix, bridge string) error {
	if err := CheckPrefix(prefix); err != nil {
		return err
	}
	p := prefix.Masked()
	links, err := retryDump(netlink.LinkList)
	if err != nil {
		return fmt.Errorf("checking cidr %s: listing interfaces: %w", p, err)
	}
	names := map[int]string{}
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	ours := func(index int) bool { return bridge != "" && names[index] == bridge }

	addrs, err := retryDump(func() ([]netlink.Addr, error) { return netlink.AddrList(nil, netlink.FAMILY_V4) })
	if err != nil {
		return fmt.Errorf("checking cidr %s: listing addresses: %w", p, err)
	}
	for _, a := range addrs {
		if ours(a.LinkIndex) || a.IPNet == nil {
			continue
		}
		ap, ok := prefixOf(a.IPNet)
		if !ok || !ap.Overlaps(p) {
			continue
		}
		return fmt.Errorf("cidr %s overlaps %s on interface %s; choose a cidr that is not in use on this host", p, ap, names[a.LinkIndex])
	}

	routes, err := retryDump(func() ([]netlink.Route, error) {
		return netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return fmt.Errorf("checking cidr %s: listing routes: %w", p, err)
	}
	for _, r := range routes {
		if r.Dst == nil || ours(r.LinkIndex) {
			continue
		}
		rp, ok := prefixOf(r.Dst)
		// Default routes, and the 0/1 + 128/1 pair a full-tunnel VPN uses
		// in their place, cover everything; the bridge's more specific route
		// wins over them, so they are no conflict.
		if !ok || rp.Bits() <= 1 || !rp.Overlaps(p) {
			continue
		}
		if r.Type == unix.RTN_LOCAL || r.Type == unix.RTN_BROADCAST {
			// Local and broadcast routes mirror addresses checked above.
			continue
		}
		dev := names[r.LinkIndex]
		if dev == "" {
			dev = "no device"
		}
		table := ""
		if r.Table != unix.RT_TABLE_MAIN {
			table = fmt.Sprintf(" in table %d", r.Table)
		}
		return fmt.Errorf("cidr %s overlaps route %s dev %s%s; choose a cidr that is not in use on this host", p, rp, dev, table)
	}
	return nil
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones).Masked(), true
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT)
}

// retryDump repeats a netlink dump that the kernel interrupted because the
// table changed meanwhile (taps of other VMs being created at the same
// time); such a dump is incomplete and must not be trusted. Stopping 500
// VMs at once interrupted ten back-to-back dumps in a row, so the retries
// back off (1 ms, 2 ms, ... up to 20 ms; about 0.6 s in all).
func retryDump[T any](dump func() (T, error)) (T, error) {
	var v T
	var err error
	for attempt := range 40 {
		v, err = dump()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
		time.Sleep(time.Duration(min(attempt+1, 20)) * time.Millisecond)
	}
	return v, err
}
