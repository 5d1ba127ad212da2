package network

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

const ownerMarkPrefix = "banger uid="

// OwnerMark is the record banger keeps on what it creates for a user: the
// alias of a bridge and the comment of a NAT table's set. Only root can
// write either, so the record says which uid banger created it for.
func OwnerMark(uid int) string { return ownerMarkPrefix + strconv.Itoa(uid) }

// markOwner parses an OwnerMark.
func markOwner(s string) (int, bool) {
	v, ok := strings.CutPrefix(s, ownerMarkPrefix)
	if !ok {
		return 0, false
	}
	uid, err := strconv.Atoi(v)
	if err != nil || uid < 0 || strconv.Itoa(uid) != v {
		return 0, false
	}
	return uid, true
}

// Bridge is a bridge carrying a user's record, with its IPv4 addresses
// (each the bridge's address with its subnet's length).
type Bridge struct {
	Name  string
	Addrs []netip.Prefix
}

// OwnedBridges lists the bridges that carry uid's record.
func OwnedBridges(uid int) ([]Bridge, error) {
	links, err := retryDump(bridgeLinks)
	if err != nil {
		return nil, fmt.Errorf("listing interfaces: %w", err)
	}
	byIndex := map[int]int{}
	var out []Bridge
	for _, l := range links {
		if _, ok := l.(*netlink.Bridge); !ok {
			continue
		}
		if owner, ok := markOwner(l.Attrs().Alias); ok && owner == uid {
			byIndex[l.Attrs().Index] = len(out)
			out = append(out, Bridge{Name: l.Attrs().Name})
		}
	}
	if len(out) == 0 {
		return nil, nil
	}
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return netlink.AddrList(nil, netlink.FAMILY_V4) })
	if err != nil {
		return nil, fmt.Errorf("listing addresses: %w", err)
	}
	for _, a := range addrs {
		i, ok := byIndex[a.LinkIndex]
		if !ok || a.IPNet == nil {
			continue
		}
		ip, ok := netip.AddrFromSlice(a.IPNet.IP)
		if !ok {
			continue
		}
		ones, _ := a.IPNet.Mask.Size()
		out[i].Addrs = append(out[i].Addrs, netip.PrefixFrom(ip.Unmap(), ones))
	}
	return out, nil
}

// bridgeLinks lists the host's bridges. The dump asks the kernel for
// bridges only (a link-kind filter, Linux 4.6+): a full one (LinkList)
// carries every tap, and every NAT add and remove checks the guest's bridge,
// so a burst of 500 stops parsed 2 GiB of tap attributes (4 MiB a stop)
// and the daemon's heap peaked with it. A kernel that ignores the filter
// answers with every link; OwnedBridges checks the type anyway.
func bridgeLinks() ([]netlink.Link, error) {
	req := nl.NewNetlinkRequest(unix.RTM_GETLINK, unix.NLM_F_DUMP)
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	info := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
	info.AddRtAttr(nl.IFLA_INFO_KIND, nl.NonZeroTerminated("bridge"))
	req.AddData(info)
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWLINK)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, err
	}
	links := make([]netlink.Link, 0, len(msgs))
	for _, m := range msgs {
		l, lerr := netlink.LinkDeserialize(nil, m)
		if lerr != nil {
			return nil, lerr
		}
		links = append(links, l)
	}
	return links, err // ErrDumpInterrupted: retryDump asks again
}

// checkBridgeOwner returns nil when link is a bridge carrying uid's record;
// otherwise an ErrNotBanger error "<what>: not banger's: <reason>".
func checkBridgeOwner(what string, link netlink.Link, uid int) error {
	name := link.Attrs().Name
	if _, ok := link.(*netlink.Bridge); !ok {
		return fmt.Errorf("%s: %w: %s is a %s, not a bridge; left alone", what, ErrNotBanger, name, link.Type())
	}
	alias := link.Attrs().Alias
	owner, ok := markOwner(alias)
	switch {
	case ok && owner == uid:
		return nil
	case ok:
		return fmt.Errorf("%s: %w: bridge %s belongs to uid %d, not %d; left alone", what, ErrNotBanger, name, owner, uid)
	case alias == "":
		return fmt.Errorf("%s: %w: bridge %s carries no banger record; left alone", what, ErrNotBanger, name)
	}
	return fmt.Errorf("%s: %w: bridge %s has the alias %q, not banger's record; left alone", what, ErrNotBanger, name, alias)
}

// EnsureBridge makes the bridge exist for uid with ip/prefixlen on it and
// up. It reports whether it had to create the bridge (resolver settings tied
// to the link must then be re-applied).
//
// A new bridge gets uid's record as its alias. The kernel ignores an alias
// in the create request, so the record is a second request; a kill between
// the two leaves a bridge without a record and without ports, which is what
// a bridge of a banger older than the record looks like too. Such a bridge
// is adopted (given uid's record) by the first EnsureBridge whose uid owns
// every port on it and whose address is the only one on it; a bridge with
// another uid's record, or any other alias, is refused and left alone.
func EnsureBridge(name string, ip netip.Addr, prefix netip.Prefix, uid int) (created bool, err error) {
	if err := ValidateIfName(name); err != nil {
		return false, fmt.Errorf("ensuring bridge: %w", err)
	}
	if err := CheckPrefix(prefix); err != nil {
		return false, fmt.Errorf("ensuring bridge %s: %w", name, err)
	}
	if !ip.Is4() || !prefix.Contains(ip) {
		return false, fmt.Errorf("ensuring bridge %s: address %s is not inside %s", name, ip, prefix.Masked())
	}
	if uid < 0 {
		return false, fmt.Errorf("ensuring bridge %s: bad owner uid %d", name, uid)
	}
	what := "ensuring bridge " + name
	want := &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(ip.AsSlice()), Mask: net.CIDRMask(prefix.Bits(), 32)}}
	link, err := netlink.LinkByName(name)
	switch {
	case err == nil:
	case isNotFound(err):
		addErr := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}})
		if addErr != nil && !errors.Is(addErr, unix.EEXIST) {
			return false, fmt.Errorf("creating bridge %s: %w", name, addErr)
		}
		if link, err = netlink.LinkByName(name); err != nil {
			return false, fmt.Errorf("reading bridge %s after creating it: %w", name, err)
		}
		if addErr == nil {
			if err := netlink.LinkSetAlias(link, OwnerMark(uid)); err != nil {
				_ = netlink.LinkDel(link)
				return false, fmt.Errorf("recording uid %d on bridge %s: %w", uid, name, err)
			}
			link.Attrs().Alias = OwnerMark(uid)
			created = true
		}
	default:
		return false, fmt.Errorf("looking up bridge %s: %w", name, err)
	}
	if _, ok := link.(*netlink.Bridge); !ok {
		return false, fmt.Errorf("%s: %w: an interface of type %s already has that name; rename bridge_name or remove it", what, ErrNotBanger, link.Type())
	}
	if link.Attrs().Alias == "" {
		if err := adoptBridge(what, link, uid, want); err != nil {
			return false, err
		}
	} else if err := checkBridgeOwner(what, link, uid); err != nil {
		return false, err
	}

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

// adoptBridge gives a bridge without any record uid's record, when every
// port on it is a banger tap of uid and it carries no address but want.
func adoptBridge(what string, br netlink.Link, uid int, want *netlink.Addr) error {
	name := br.Attrs().Name
	links, err := retryDump(netlink.LinkList)
	if err != nil {
		return fmt.Errorf("%s: listing its ports: %w", what, err)
	}
	for _, l := range links {
		if l.Attrs().MasterIndex != br.Attrs().Index {
			continue
		}
		if checkTap("port", l, uid) != nil {
			return fmt.Errorf("%s: %w: bridge %s carries no banger record and its port %s is not a banger tap of uid %d; left alone", what, ErrNotBanger, name, l.Attrs().Name, uid)
		}
	}
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return netlink.AddrList(br, netlink.FAMILY_V4) })
	if err != nil {
		return fmt.Errorf("%s: listing its addresses: %w", what, err)
	}
	for _, a := range addrs {
		if a.IPNet == nil || a.IPNet.String() != want.IPNet.String() {
			return fmt.Errorf("%s: %w: bridge %s carries no banger record and has address %s, not %s; left alone", what, ErrNotBanger, name, a.IPNet, want.IPNet)
		}
	}
	if err := netlink.LinkSetAlias(br, OwnerMark(uid)); err != nil {
		return fmt.Errorf("%s: recording uid %d on it: %w", what, uid, err)
	}
	br.Attrs().Alias = OwnerMark(uid)
	return nil
}

// DeleteBridge removes uid's bridge; a missing bridge is not an error. An
// interface of that name that is not a bridge, or a bridge without uid's
// record, is refused and left alone.
func DeleteBridge(name string, uid int) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return fmt.Errorf("looking up bridge %s: %w", name, err)
	}
	if err := checkBridgeOwner("deleting bridge "+name, link, uid); err != nil {
		return err
	}
	if err := netlink.LinkDel(link); err != nil && !isNotFound(err) {
		return fmt.Errorf("deleting bridge %s: %w", name, err)
	}
	return nil
}
