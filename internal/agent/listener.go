package agent

import "net"

// HostCIDOnly wraps l so that Accept returns only connections whose remote
// vsock context ID is the host's (2); any other connection, or one whose
// address cidOf cannot read, is closed and skipped. cidOf extracts the CID
// from a remote address (in the guest: from *vsock.Addr).
func HostCIDOnly(l net.Listener, cidOf func(net.Addr) (uint32, bool)) net.Listener {
	return &hostOnly{Listener: l, cidOf: cidOf}
}

type hostOnly struct {
	net.Listener
	cidOf func(net.Addr) (uint32, bool)
}

func (h *hostOnly) Accept() (net.Conn, error) {
	for {
		c, err := h.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if cid, ok := h.cidOf(c.RemoteAddr()); ok && cid == HostCID {
			return c, nil
		}
		_ = c.Close()
	}
}
