package network

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TapAlias is the interface alias banger sets on every tap it creates; a tap
// without it is someone else's and is never reused or deleted by CreateTap.
const TapAlias = "banger"

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

// EnsureBridge makes the bridge exist with ip/prefixlen on it and up. It
// reports whether it had to create the bridge (resolver settings tied to the
// link must then be re-applied).
func EnsureBridge(name string, ip netip.Addr, prefix netip.Prefix) (created bool, err error) {
	if err := ValidateIfName(name); err != nil {
		return false, fmt.Errorf("ensuring bridge: %w", err)
	}
	if err := CheckPrefix(prefix); err != nil {
		return false, fmt.Errorf("ensuring bridge %s: %w", name, err)
	}
	if !ip.Is4() || !prefix.Contains(ip) {
		return false, fmt.Errorf("ensuring bridge %s: address %s is not inside %s", name, ip, prefix.Masked())
	}
	link, err := netlink.LinkByName(name)
	switch {
	case err == nil:
		if _, ok := link.(*netlink.Bridge); !ok {
			return false, fmt.Errorf("ensuring bridge %s: %w: an interface of type %s already has that name; rename bridge_name or remove it", name, ErrNotBanger, link.Type())
		}
	case isNotFound(err):
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
		if err := netlink.LinkAdd(br); err != nil && !errors.Is(err, unix.EEXIST) {
			return false, fmt.Errorf("creating bridge %s: %w", name, err)
		}
		created = true
		if link, err = netlink.LinkByName(name); err != nil {
			return created, fmt.Errorf("reading bridge %s after creating it: %w", name, err)
		}
	default:
		return false, fmt.Errorf("looking up bridge %s: %w", name, err)
	}

	want := &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(ip.AsSlice()), Mask: net.CIDRMask(prefix.Bits(), 32)}}
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return netlink.AddrList(link, netlink.FAMILY_V4) })
	if err != nil {
		return created, fmt.Errorf("listing addresses of bridge %s: %w", name, err)
	}
	have := false
	for _, a := range addrs {
		if a.IPNet != nil && a.IPNet.String() == want.IPNet.String() {
			have = true
			break
		}
	}
	if !have {
		if err := netlink.AddrAdd(link, want); err != nil && !errors.Is(err, unix.EEXIST) {
			return created, fmt.Errorf("adding %s to bridge %s: %w", want.IPNet, name, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return created, fmt.Errorf("setting bridge %s up: %w", name, err)
	}
	return created, nil
}

// DeleteBridge removes the bridge; a missing bridge is not an error. An
// interface of that name that is not a bridge is refused.
func DeleteBridge(name string) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return fmt.Errorf("looking up bridge %s: %w", name, err)
	}
	if _, ok := link.(*netlink.Bridge); !ok {
		return fmt.Errorf("deleting bridge %s: %w: it is a %s, left alone", name, ErrNotBanger, link.Type())
	}
	if err := netlink.LinkDel(link); err != nil && !isNotFound(err) {
		return fmt.Errorf("deleting bridge %s: %w", name, err)
	}
	return nil
}

// CreateTap creates a persistent tap owned by uid/gid, enslaved to bridge and
// up. An existing tap is reused only when banger made it (alias "banger"),
// it is owned by uid, and it is a tap; it is then (re-)enslaved and set up.
// Anything else under that name is refused and left alone.
func CreateTap(name, bridge string, uid, gid int) error {
	if err := ValidateIfName(name); err != nil {
		return fmt.Errorf("creating tap: %w", err)
	}
	if uid < 0 || gid < 0 {
		return fmt.Errorf("creating tap %s: bad owner %d:%d", name, uid, gid)
	}
	br, err := netlink.LinkByName(bridge)
	if err != nil {
		if isNotFound(err) {
			return fmt.Errorf("creating tap %s: bridge %s does not exist; it is created when the daemon starts a vm", name, bridge)
		}
		return fmt.Errorf("creating tap %s: looking up bridge %s: %w", name, bridge, err)
	}
	if _, ok := br.(*netlink.Bridge); !ok {
		return fmt.Errorf("creating tap %s: %s is a %s, not a bridge", name, bridge, br.Type())
	}

	tap := &netlink.Tuntap{
		LinkAttrs: netlink.LinkAttrs{Name: name},
		Mode:      netlink.TUNTAP_MODE_TAP,
		// TUN_EXCL: never attach to a tap that already exists.
		Flags: netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR | netlink.TUNTAP_TUN_EXCL,
		Owner: uint32(uid),
		Group: uint32(gid),
	}
	addErr := netlink.LinkAdd(tap)
	if addErr == nil {
		link, err := netlink.LinkByName(name)
		if err != nil {
			return fmt.Errorf("reading tap %s after creating it: %w", name, err)
		}
		if err := netlink.LinkSetAlias(link, TapAlias); err != nil {
			_ = netlink.LinkDel(link)
			return fmt.Errorf("marking tap %s as banger's: %w", name, err)
		}
		return attachUp(link, br)
	}

	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("creating tap %s: %w", name, addErr)
	}
	t, ok := link.(*netlink.Tuntap)
	switch {
	case !ok || t.Mode != netlink.TUNTAP_MODE_TAP:
		return fmt.Errorf("creating tap %s: %w: an interface of type %s already has that name and was left alone; remove it or pick another vm id", name, ErrNotBanger, link.Type())
	case t.Attrs().Alias != TapAlias:
		return fmt.Errorf("creating tap %s: %w: a tap of that name exists without banger's mark and was left alone; remove it with `ip link del %s` if it is stale", name, ErrNotBanger, name)
	case int(t.Owner) != uid:
		return fmt.Errorf("creating tap %s: %w: it is owned by uid %d, not %d, and was left alone", name, ErrNotBanger, t.Owner, uid)
	case t.Attrs().MasterIndex != 0 && t.Attrs().MasterIndex != br.Attrs().Index:
		return fmt.Errorf("creating tap %s: %w: it is enslaved to another interface (index %d), not %s, and was left alone", name, ErrNotBanger, t.Attrs().MasterIndex, bridge)
	}
	return attachUp(link, br)
}

func attachUp(link, br netlink.Link) error {
	name := link.Attrs().Name
	if link.Attrs().MasterIndex != br.Attrs().Index {
		if err := netlink.LinkSetMaster(link, br); err != nil {
			return fmt.Errorf("enslaving tap %s to bridge %s: %w", name, br.Attrs().Name, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("setting tap %s up: %w", name, err)
	}
	return nil
}

// DeleteTap removes a tap banger made; a missing one is not an error. An
// interface of that name that is not a banger tap is refused and left alone.
func DeleteTap(name string) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return fmt.Errorf("looking up tap %s: %w", name, err)
	}
	if t, ok := link.(*netlink.Tuntap); !ok || t.Mode != netlink.TUNTAP_MODE_TAP {
		return fmt.Errorf("deleting tap %s: %w: it is a %s, left alone", name, ErrNotBanger, link.Type())
	}
	if link.Attrs().Alias != TapAlias {
		return fmt.Errorf("deleting tap %s: %w: it lacks banger's mark, left alone; remove it with `ip link del %s` if it is stale", name, ErrNotBanger, name)
	}
	if err := netlink.LinkDel(link); err != nil && !isNotFound(err) {
		return fmt.Errorf("deleting tap %s: %w", name, err)
	}
	return nil
}

// TapCounters returns the bytes received and transmitted by a tap, from the
// host's point of view. Reading link statistics needs no privilege; they are
// read over netlink so the answer follows the caller's network namespace.
func TapCounters(name string) (rx, tx uint64, err error) {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return 0, 0, fmt.Errorf("reading counters of tap %s: %w", name, err)
	}
	s := link.Attrs().Statistics
	if s == nil {
		return 0, 0, fmt.Errorf("reading counters of tap %s: the kernel returned no statistics", name)
	}
	return s.RxBytes, s.TxBytes, nil
}

// RenameTap renames a banger tap owned by uid (a pre-created pool tap) to
// the name a VM expects. The tap keeps its bridge; it is set down for the
// rename and up again. The target name must be free.
func RenameTap(from, to string, uid int) error {
	if err := ValidateIfName(to); err != nil {
		return fmt.Errorf("renaming tap %s: %w", from, err)
	}
	if _, err := netlink.LinkByName(to); err == nil {
		return fmt.Errorf("renaming tap %s to %s: %w: an interface named %s already exists", from, to, ErrNotBanger, to)
	}
	link, err := netlink.LinkByName(from)
	if err != nil {
		return fmt.Errorf("renaming tap %s: looking it up: %w", from, err)
	}
	t, ok := link.(*netlink.Tuntap)
	switch {
	case !ok || t.Mode != netlink.TUNTAP_MODE_TAP:
		return fmt.Errorf("renaming tap %s: %w: it is a %s", from, ErrNotBanger, link.Type())
	case link.Attrs().Alias != TapAlias:
		return fmt.Errorf("renaming tap %s: %w: it lacks banger's mark", from, ErrNotBanger)
	case int(t.Owner) != uid:
		return fmt.Errorf("renaming tap %s: %w: it is owned by uid %d, not %d", from, ErrNotBanger, t.Owner, uid)
	}
	if err := netlink.LinkSetDown(link); err != nil {
		return fmt.Errorf("setting tap %s down for renaming: %w", from, err)
	}
	if err := netlink.LinkSetName(link, to); err != nil {
		_ = netlink.LinkSetUp(link)
		return fmt.Errorf("renaming tap %s to %s: %w", from, to, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("setting tap %s up: %w", to, err)
	}
	return nil
}

// retryDump repeats a netlink dump that the kernel interrupted because the
// table changed meanwhile (taps of other VMs being created at the same
// time); such a dump is incomplete and must not be trusted.
func retryDump[T any](dump func() (T, error)) (T, error) {
	var v T
	var err error
	for range 10 {
		v, err = dump()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return v, err
}
