package network

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// TapAlias is the interface alias banger sets on every tap it creates; a tap
// without it is someone else's and is never reused, renamed or deleted.
const TapAlias = "banger"

// tapStep is called at the steps of createMarkedTap; tests replace it to
// stop (and kill) a creation half way.
var tapStep = func(stage string) {}

// errTapExists says TUNSETIFF found an interface of that name.
var errTapExists = errors.New("an interface of that name exists")

// createMarkedTap creates a persistent tap owned by uid:gid that carries
// banger's mark. A tap cannot be created over netlink, and the kernel
// ignores an alias in a create request, so atomicity comes from the tap's
// lifetime instead: the tap is created bound to this process's descriptor
// (not persistent), marked, and only then made persistent. A kill before
// that closes the descriptor and the kernel removes the tap, so no kill
// leaves an unmarked persistent tap behind.
func createMarkedTap(name string, uid, gid int) error {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening /dev/net/tun: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	// TUN_EXCL: never attach to an interface that already exists.
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR | unix.IFF_TUN_EXCL)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		if errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EEXIST) {
			return errTapExists
		}
		return fmt.Errorf("TUNSETIFF: %w", err)
	}
	if got := ifr.Name(); got != name {
		return fmt.Errorf("the kernel named the tap %q", got)
	}
	tapStep("created")
	if err := unix.IoctlSetInt(fd, unix.TUNSETOWNER, uid); err != nil {
		return fmt.Errorf("TUNSETOWNER %d: %w", uid, err)
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETGROUP, gid); err != nil {
		return fmt.Errorf("TUNSETGROUP %d: %w", gid, err)
	}
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("reading it after creating it: %w", err)
	}
	if err := netlink.LinkSetAlias(link, TapAlias); err != nil {
		return fmt.Errorf("marking it as banger's: %w", err)
	}
	tapStep("marked")
	if err := unix.IoctlSetInt(fd, unix.TUNSETPERSIST, 1); err != nil {
		return fmt.Errorf("TUNSETPERSIST: %w", err)
	}
	return nil
}

// tunOwner reads the TUNSETOWNER uid of the tun/tap with the given index;
// set is false for a tap without an owner. (The netlink library reports a
// missing owner as uid 0, so the attribute is read here.)
func tunOwner(index int) (uid uint32, set bool, err error) {
	req := nl.NewNetlinkRequest(unix.RTM_GETLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(index)
	req.AddData(msg)
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWLINK)
	if err != nil {
		return 0, false, err
	}
	for _, m := range msgs {
		if len(m) < unix.SizeofIfInfomsg {
			continue
		}
		for _, info := range nested(m[unix.SizeofIfInfomsg:], unix.IFLA_LINKINFO) {
			for _, data := range nested(info, unix.IFLA_INFO_DATA) {
				for _, owner := range nested(data, unix.IFLA_TUN_OWNER) {
					if len(owner) == 4 {
						return binary.NativeEndian.Uint32(owner), true, nil
					}
				}
			}
		}
	}
	return 0, false, nil
}

// nested returns the values of the attributes of type typ in b.
func nested(b []byte, typ uint16) [][]byte {
	attrs, err := nl.ParseRouteAttr(b)
	if err != nil {
		return nil
	}
	var out [][]byte
	for _, a := range attrs {
		if a.Attr.Type&nl.NLA_TYPE_MASK == typ {
			out = append(out, a.Value)
		}
	}
	return out
}

// checkTap returns nil when link is a tap with banger's mark owned by uid;
// otherwise an ErrNotBanger error "<what>: not banger's: <reason>".
func checkTap(what string, link netlink.Link, uid int) error {
	t, ok := link.(*netlink.Tuntap)
	if !ok || t.Mode != netlink.TUNTAP_MODE_TAP {
		return fmt.Errorf("%s: %w: an interface of type %s has that name; left alone", what, ErrNotBanger, link.Type())
	}
	if link.Attrs().Alias != TapAlias {
		return fmt.Errorf("%s: %w: the tap lacks banger's mark; left alone (remove it with `ip link del %s` if it is stale)", what, ErrNotBanger, link.Attrs().Name)
	}
	owner, set, err := tunOwner(link.Attrs().Index)
	switch {
	case err != nil:
		return fmt.Errorf("%s: reading the tap's owner: %w", what, err)
	case !set:
		return fmt.Errorf("%s: %w: the tap has no owner, not uid %d; left alone", what, ErrNotBanger, uid)
	case int64(owner) != int64(uid):
		return fmt.Errorf("%s: %w: the tap is owned by uid %d, not %d; left alone", what, ErrNotBanger, owner, uid)
	}
	return nil
}

// CreateTap creates a persistent tap owned by uid/gid, marked as banger's,
// enslaved to bridge and up. The bridge must carry uid's record. An
// existing tap is reused (adopted: enslaved and set up) only when it is a
// tap with banger's mark, owned by uid, and on no bridge or on this one;
// anything else under that name is refused and left alone.
func CreateTap(name, bridge string, uid, gid int) error {
	if err := ValidateIfName(name); err != nil {
		return fmt.Errorf("creating tap: %w", err)
	}
	if uid < 0 || gid < 0 {
		return fmt.Errorf("creating tap %s: bad owner %d:%d", name, uid, gid)
	}
	what := "creating tap " + name
	br, err := netlink.LinkByName(bridge)
	if err != nil {
		if isNotFound(err) {
			return fmt.Errorf("%s: bridge %s does not exist; it is created when the daemon starts a vm", what, bridge)
		}
		return fmt.Errorf("%s: looking up bridge %s: %w", what, bridge, err)
	}
	if _, ok := br.(*netlink.Bridge); !ok {
		return fmt.Errorf("%s: %s is a %s, not a bridge", what, bridge, br.Type())
	}
	if err := checkBridgeOwner(what, br, uid); err != nil {
		return err
	}

	createErr := createMarkedTap(name, uid, gid)
	if createErr != nil && !errors.Is(createErr, errTapExists) {
		return fmt.Errorf("%s: %w", what, createErr)
	}
	link, err := netlink.LinkByName(name)
	if err != nil {
		if createErr != nil {
			return fmt.Errorf("%s: %w", what, createErr)
		}
		return fmt.Errorf("%s: reading it after creating it: %w", what, err)
	}
	if createErr != nil {
		// A leftover under this name: adopt it only if it is ours.
		if err := checkTap(what, link, uid); err != nil {
			return err
		}
		if m := link.Attrs().MasterIndex; m != 0 && m != br.Attrs().Index {
			return fmt.Errorf("%s: %w: it is enslaved to another interface (index %d), not %s; left alone", what, ErrNotBanger, m, bridge)
		}
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

// DeleteTap removes a tap banger made for uid; a missing one is not an
// error. A tap without banger's mark or owned by another uid (root is a uid
// like any other), or an interface that is not a tap, is refused and left
// alone.
func DeleteTap(name string, uid int) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return fmt.Errorf("looking up tap %s: %w", name, err)
	}
	if err := checkTap("deleting tap "+name, link, uid); err != nil {
		return err
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
// the name a VM expects. The tap keeps its bridge, which must be uid's; it
// is set down for the rename and up again. The target name must be free.
func RenameTap(from, to string, uid int) error {
	if err := ValidateIfName(to); err != nil {
		return fmt.Errorf("renaming tap %s: %w", from, err)
	}
	what := fmt.Sprintf("renaming tap %s to %s", from, to)
	if _, err := netlink.LinkByName(to); err == nil {
		return fmt.Errorf("%s: %w: an interface named %s already exists; left alone", what, ErrNotBanger, to)
	}
	link, err := netlink.LinkByName(from)
	if err != nil {
		return fmt.Errorf("%s: looking it up: %w", what, err)
	}
	if err := checkTap(what, link, uid); err != nil {
		return err
	}
	if m := link.Attrs().MasterIndex; m != 0 {
		br, err := netlink.LinkByIndex(m)
		if err != nil {
			return fmt.Errorf("%s: looking up its bridge (index %d): %w", what, m, err)
		}
		if err := checkBridgeOwner(what, br, uid); err != nil {
			return err
		}
	}
	if err := netlink.LinkSetDown(link); err != nil {
		return fmt.Errorf("setting tap %s down for renaming: %w", from, err)
	}
	if err := netlink.LinkSetName(link, to); err != nil {
		_ = netlink.LinkSetUp(link)
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("setting tap %s up: %w", to, err)
	}
	return nil
}

// OwnTap reports whether the tap name carries banger's mark and is owned by
// uid (TUNSETOWNER), read without privilege. The daemon uses it before it
// takes over a leftover tap by name.
func OwnTap(name string, uid int) bool {
	link, err := netlink.LinkByName(name)
	if err != nil || link.Attrs().Alias != TapAlias {
		return false
	}
	owner, set, err := tunOwner(link.Attrs().Index)
	return err == nil && set && int(owner) == uid
}
