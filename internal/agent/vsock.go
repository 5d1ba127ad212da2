package agent

import (
	"net"

	"github.com/mdlayher/vsock"
)

// VsockCID reads the context ID of an AF_VSOCK address (*vsock.Addr); it is
// the cidOf the guest passes to HostCIDOnly.
func VsockCID(a net.Addr) (uint32, bool) {
	va, ok := a.(*vsock.Addr)
	if !ok || va == nil {
		return 0, false
	}
	return va.ContextID, true
}
