// Package network owns banger's host networking objects: the bridge and the
// per-VM taps (netlink, in-process), the NAT table (nftables), and the
// address helpers that allocate guest IPs and MACs from the VM subnet.
//
// Every function acts on the network namespace of the calling thread, so the
// daemon works unchanged under `ip netns exec` and tests can run each case in
// a throwaway namespace. The privileged functions are called from
// internal/hostops, which validates arguments before calling them.
package network

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// IfNameMax is the longest interface name Linux accepts (IFNAMSIZ-1).
const IfNameMax = 15

// TapPrefix starts the name of every banger tap.
const TapPrefix = "bgt-"

// ErrNotBanger marks a host object that exists under one of banger's names
// but was not made by banger for this user; it is left alone.
var ErrNotBanger = errors.New("not banger's")

// TapName returns the tap name of a VM: "bgt-" + vmID, at most 15 characters.
func TapName(vmID string) (string, error) {
	if vmID == "" {
		return "", fmt.Errorf("tap name: empty vm id")
	}
	name := TapPrefix + vmID
	if len(name) > IfNameMax {
		return "", fmt.Errorf("tap name %q for vm %s is %d characters; interface names are at most %d (use a vm id of at most %d characters)",
			name, vmID, len(name), IfNameMax, IfNameMax-len(TapPrefix))
	}
	if err := ValidateIfName(name); err != nil {
		return "", fmt.Errorf("tap name for vm %s: %w", vmID, err)
	}
	return name, nil
}

// ValidateIfName checks that name is a usable Linux interface name.
func ValidateIfName(name string) error {
	switch {
	case name == "":
		return errors.New("interface name is empty")
	case len(name) > IfNameMax:
		return fmt.Errorf("interface name %q is %d characters; at most %d are allowed", name, len(name), IfNameMax)
	case name == "." || name == "..":
		return fmt.Errorf("interface name %q is not allowed", name)
	}
	for _, r := range name {
		if r <= ' ' || r == '/' || r == ':' || r > '~' {
			return fmt.Errorf("interface name %q contains %q; use letters, digits, '-' and '_'", name, r)
		}
	}
	return nil
}

// MACFor derives a VM's MAC address from its IPv4 address: a locally
// administered unicast prefix 02:fc followed by the four address bytes.
func MACFor(ip netip.Addr) string {
	b := ip.Unmap().As4()
	return fmt.Sprintf("02:fc:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3])
}

// Gateway returns the first host address of prefix, the bridge's address.
func Gateway(prefix netip.Prefix) netip.Addr {
	return prefix.Masked().Addr().Next()
}

// Broadcast returns the last address of an IPv4 prefix.
func Broadcast(prefix netip.Prefix) netip.Addr {
	p := prefix.Masked()
	v := binary.BigEndian.Uint32(p.Addr().AsSlice())
	v |= ^uint32(0) >> uint(p.Bits())
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

// CheckPrefix refuses a prefix that is not IPv4 or is too small to hold the
// network, the gateway, one guest and the broadcast address.
func CheckPrefix(prefix netip.Prefix) error {
	if !prefix.IsValid() {
		return errors.New("cidr is not a valid prefix; use a form like 172.16.0.0/24")
	}
	if !prefix.Addr().Is4() {
		return fmt.Errorf("cidr %s is not IPv4; use an IPv4 prefix like 172.16.0.0/24", prefix)
	}
	if prefix.Bits() > 30 {
		return fmt.Errorf("cidr %s is too small for one guest (network, gateway, guest and broadcast need at least a /30)", prefix)
	}
	return nil
}

// Capacity is how many guest addresses prefix holds: all but the network
// and broadcast addresses and the bridge's own.
func Capacity(prefix netip.Prefix, bridgeIP netip.Addr) int {
	if CheckPrefix(prefix) != nil {
		return 0
	}
	n := 1<<(32-prefix.Bits()) - 2
	if prefix.Masked().Contains(bridgeIP) {
		n--
	}
	return n
}

// NextFree returns the lowest host address of prefix that is not the network
// address, the bridge's address, the broadcast address, or in used.
func NextFree(prefix netip.Prefix, bridgeIP netip.Addr, used map[netip.Addr]bool) (netip.Addr, error) {
	if err := CheckPrefix(prefix); err != nil {
		return netip.Addr{}, err
	}
	p := prefix.Masked()
	bcast := Broadcast(p)
	for a := p.Addr().Next(); a.IsValid() && a != bcast; a = a.Next() {
		if a == bridgeIP || used[a] {
			continue
		}
		return a, nil
	}
	return netip.Addr{}, fmt.Errorf("cidr %s has no free guest address left (%d in use); delete a vm or use a larger cidr", p, len(used))
}

// Mask renders the dotted netmask of an IPv4 prefix.
func Mask(prefix netip.Prefix) string {
	m := ^uint32(0) << uint(32-prefix.Bits())
	if prefix.Bits() == 0 {
		m = 0
	}
	return fmt.Sprintf("%d.%d.%d.%d", byte(m>>24), byte(m>>16), byte(m>>8), byte(m))
}

// KernelIPArg renders the guest's static network configuration for the
// kernel command line (DESIGN.md §5):
// "ip=<guest>::<gw>:<mask>:<hostname>:eth0:off:<dns>". The resolver field is
// omitted when dns is not valid.
func KernelIPArg(guest, gw netip.Addr, prefix netip.Prefix, hostname string, dns netip.Addr) string {
	var b strings.Builder
	fmt.Fprintf(&b, "ip=%s::%s:%s:%s:eth0:off", guest, gw, Mask(prefix), hostname)
	if dns.IsValid() {
		fmt.Fprintf(&b, ":%s", dns)
	}
	return b.String()
}
