package firecracker

import (
	"fmt"
	"net/netip"
	"strings"
)

// kernelBase is the fixed part of the guest kernel line (DESIGN.md §5).
// Firecracker's boot_args replace its defaults entirely, so the line must be
// complete: reboot=k makes the guest's answer to Ctrl-Alt-Del end the
// Firecracker process, and the i8042 options keep the keyboard controller
// that delivers it simple.
const kernelBase = "console=ttyS0 reboot=k panic=1 i8042.noaux i8042.nomux i8042.dumbkbd"

// KernelCmdline returns the guest kernel line: the fixed base, then ipArg
// (see IPArg), then any extra words. Empty parts are skipped. Firecracker
// appends the root device itself.
func KernelCmdline(ipArg string, extra ...string) string {
	parts := []string{kernelBase}
	for _, p := range append([]string{ipArg}, extra...) {
		if p = strings.TrimSpace(p); p != "" {
			parts = append(parts, p)
		}
	}
	return strings.Join(parts, " ")
}

// IPArg returns the kernel's static network configuration for eth0:
// ip=<guest>::<gateway>:<netmask>:<hostname>:eth0:off:<dns>. dns may be the
// zero Addr to leave it out.
func IPArg(guest, gateway netip.Addr, prefixLen int, hostname string, dns netip.Addr) (string, error) {
	if !guest.Is4() || !gateway.Is4() {
		return "", fmt.Errorf("building kernel ip= argument: guest %s and gateway %s must be IPv4 addresses", guest, gateway)
	}
	if prefixLen < 1 || prefixLen > 30 {
		return "", fmt.Errorf("building kernel ip= argument: prefix length %d must be 1..30", prefixLen)
	}
	if hostname == "" || strings.ContainsAny(hostname, ": \t\n") {
		return "", fmt.Errorf("building kernel ip= argument: hostname %q must be non-empty without ':' or spaces", hostname)
	}
	mask := uint32(0xffffffff) << (32 - prefixLen)
	m := netip.AddrFrom4([4]byte{byte(mask >> 24), byte(mask >> 16), byte(mask >> 8), byte(mask)})
	s := fmt.Sprintf("ip=%s::%s:%s:%s:eth0:off", guest, gateway, m, hostname)
	if dns.IsValid() {
		if !dns.Is4() {
			return "", fmt.Errorf("building kernel ip= argument: dns %s must be an IPv4 address", dns)
		}
		s += ":" + dns.String()
	}
	return s, nil
}
