package agent

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/mdlayher/vsock"
)

func TestVsockCID(t *testing.T) {
	if cid, ok := VsockCID(&vsock.Addr{ContextID: 2, Port: 1024}); !ok || cid != 2 {
		t.Errorf("VsockCID(vsock 2:1024) = %d, %v", cid, ok)
	}
	if _, ok := VsockCID(&net.UnixAddr{Name: "x", Net: "unix"}); ok {
		t.Error("VsockCID(unix addr) reported a CID")
	}
	if _, ok := VsockCID((*vsock.Addr)(nil)); ok {
		t.Error("VsockCID(nil *vsock.Addr) reported a CID")
	}
}

// TestHostCIDOnlyRealVsock uses the kernel's vsock loopback (CID 1), when the
// host has it: a local peer is not the host (CID 2), so the filtered
// listener drops it while the unfiltered one accepts it.
func TestHostCIDOnlyRealVsock(t *testing.T) {
	l, err := vsock.ListenContextID(vsock.Local, 0, nil)
	if err != nil {
		t.Skipf("needs AF_VSOCK loopback (vsock_loopback module): %v", err)
	}
	defer l.Close()
	port := l.Addr().(*vsock.Addr).Port
	filtered := HostCIDOnly(l, VsockCID)

	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := filtered.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	c, err := vsock.Dial(vsock.Local, port, nil)
	if err != nil {
		t.Skipf("needs AF_VSOCK loopback to dial CID 1: %v", err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("a CID 1 peer read %v, want EOF (connection dropped by the filter)", err)
	}
	l.Close()
	if c, ok := <-accepted; ok {
		t.Errorf("the filter accepted a connection from %v", c.RemoteAddr())
	}
}
