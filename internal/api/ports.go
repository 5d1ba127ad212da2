package api

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// MethodVMPorts is vm.ports: a VM's guest listeners and the forwards the
// daemon holds for it (params VMRef, result VMPorts).
const MethodVMPorts = "vm.ports"

// EventVMForward is an event on GET /events when the daemon opens or closes
// a forward (Event.Forward says which, Event.Stage is "open" or "close").
const EventVMForward = "vm.forward"

// Forward kinds.
const (
	ForwardPublished = "published" // from --publish, held while the VM runs
	ForwardAuto      = "auto"      // opened because a guest process listens (auto_forward)
)

// Forward is one host listener that tunnels to a guest port.
type Forward struct {
	Kind      string `json:"kind"`      // ForwardPublished or ForwardAuto
	HostAddr  string `json:"host_addr"` // the address listened on, "127.0.0.1" unless one was named
	HostPort  int    `json:"host_port"` // the port listened on; 0 when not held
	GuestPort int    `json:"guest_port"`
	// Requested is the host port asked for when another one was chosen
	// (it was taken, or is privileged), with why in Note.
	Requested int    `json:"requested_port,omitempty"`
	Note      string `json:"note,omitempty"`
	// Error says why a published forward is not held (its port is taken,
	// the VM is not running); the daemon retries while the VM runs.
	Error string `json:"error,omitempty"`
	Conns int    `json:"conns"` // connections open through it now
}

// Host is where the forward listens, "127.0.0.1:8080", or the requested
// address when it is not held.
func (f Forward) Host() string {
	port := f.HostPort
	if port == 0 {
		port = f.Requested
	}
	if a, err := netip.ParseAddr(f.HostAddr); err == nil {
		return netip.AddrPortFrom(a, uint16(port)).String()
	}
	return f.HostAddr + ":" + strconv.Itoa(port)
}

// GuestListener is one listening TCP socket in the guest.
type GuestListener struct {
	Proto string `json:"proto"` // "tcp" or "tcp6"
	Addr  string `json:"addr"`  // the address it is bound to, "0.0.0.0", "::1"
	Port  int    `json:"port"`
}

// VMPorts is vm.ports's result.
type VMPorts struct {
	VM          string          `json:"vm"`
	State       string          `json:"state"`
	AutoForward bool            `json:"auto_forward"`
	Listeners   []GuestListener `json:"listeners"`
	Forwards    []Forward       `json:"forwards"`
	// Note says why listeners are not shown (the VM is not running, its
	// agent is too old or does not answer).
	Note string `json:"note,omitempty"`
}

// PublishSpec is one parsed --publish value.
type PublishSpec struct {
	HostAddr  string // "" means 127.0.0.1
	HostPort  int
	GuestPort int
}

// ParsePublish parses "[ADDR:]HOST:GUEST": "8080:80", "127.0.0.1:8080:80",
// "[::1]:8080:80", "0.0.0.0:8080:80". ADDR is an IP address.
func ParsePublish(s string) (PublishSpec, error) {
	bad := func(why string) (PublishSpec, error) {
		return PublishSpec{}, fmt.Errorf("--publish %q: %s; use [ADDR:]HOST:GUEST such as 8080:80 or 127.0.0.1:8080:80", s, why)
	}
	i := strings.LastIndex(s, ":")
	if i < 0 {
		return bad("need a host and a guest port")
	}
	guest, err := parsePort(s[i+1:])
	if err != nil {
		return bad("guest port " + err.Error())
	}
	addr, host, err := parseHostPort(s[:i])
	if err != nil {
		return bad(err.Error())
	}
	return PublishSpec{HostAddr: addr, HostPort: host, GuestPort: guest}, nil
}

// ParseUnpublish parses "[ADDR:]HOST" of --unpublish; ADDR "" means any.
func ParseUnpublish(s string) (addr string, port int, err error) {
	addr, port, err = parseHostPort(s)
	if err != nil {
		return "", 0, fmt.Errorf("--unpublish %q: %v; use [ADDR:]HOST such as 8080", s, err)
	}
	return addr, port, nil
}

func parseHostPort(s string) (string, int, error) {
	addr, port := "", s
	if i := strings.LastIndex(s, ":"); i >= 0 {
		addr, port = s[:i], s[i+1:]
		if strings.HasPrefix(addr, "[") && strings.HasSuffix(addr, "]") {
			addr = addr[1 : len(addr)-1]
		} else if strings.Contains(addr, ":") {
			return "", 0, fmt.Errorf("%q is not an IP address (write an IPv6 address in brackets, [::1])", addr)
		}
		a, err := netip.ParseAddr(addr)
		if err != nil || a.Zone() != "" {
			return "", 0, fmt.Errorf("%q is not an IP address", addr)
		}
		addr = a.Unmap().String()
	}
	n, err := parsePort(port)
	if err != nil {
		return "", 0, fmt.Errorf("host port %v", err)
	}
	return addr, n, nil
}

func parsePort(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("%q is not a port (1 to 65535)", s)
	}
	return n, nil
}
