package agent

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// cidAddr is a stand-in for *vsock.Addr.
type cidAddr struct{ cid uint32 }

func (a cidAddr) Network() string { return "vsock" }
func (a cidAddr) String() string  { return "vsock-cid" }

// addrConn is one end of a pipe with a chosen remote address.
type addrConn struct {
	net.Conn
	remote net.Addr
}

func (c addrConn) RemoteAddr() net.Addr { return c.remote }

// queueListener hands out prepared connections, then reports closed.
type queueListener struct {
	conns chan net.Conn
}

func (q *queueListener) Accept() (net.Conn, error) {
	c, ok := <-q.conns
	if !ok {
		return nil, net.ErrClosed
	}
	return c, nil
}
func (q *queueListener) Close() error   { return nil }
func (q *queueListener) Addr() net.Addr { return cidAddr{} }

func cidOf(a net.Addr) (uint32, bool) {
	v, ok := a.(cidAddr)
	return v.cid, ok
}

func TestHostCIDOnly(t *testing.T) {
	remotes := []net.Addr{cidAddr{3}, &net.UnixAddr{Name: "x", Net: "unix"}, cidAddr{1}, cidAddr{HostCID}, cidAddr{7}}
	q := &queueListener{conns: make(chan net.Conn, len(remotes))}
	var peers []net.Conn
	for _, r := range remotes {
		server, client := net.Pipe()
		peers = append(peers, client)
		q.conns <- addrConn{Conn: server, remote: r}
	}
	close(q.conns)
	l := HostCIDOnly(q, cidOf)

	c, err := l.Accept()
	if err != nil {
		t.Fatalf("Accept: %v", err)
	}
	if got, _ := cidOf(c.RemoteAddr()); got != HostCID {
		t.Fatalf("accepted CID %d, want %d", got, HostCID)
	}
	// The rejected connections before the host's were closed: their peers read EOF.
	for i := range 3 {
		peers[i].SetReadDeadline(time.Now().Add(time.Second))
		if _, err := peers[i].Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Errorf("peer %d (%v): read err = %v, want EOF (closed)", i, remotes[i], err)
		}
	}
	// The host connection is open and usable.
	go peers[3].Write([]byte("x"))
	buf := make([]byte, 1)
	if _, err := io.ReadFull(c, buf); err != nil || buf[0] != 'x' {
		t.Errorf("reading host connection: %q, %v", buf, err)
	}
	// The CID 7 connection is dropped too, and the listener's end is reported.
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Accept err = %v, want net.ErrClosed", err)
	}
	peers[4].SetReadDeadline(time.Now().Add(time.Second))
	if _, err := peers[4].Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("CID 7 peer read err = %v, want EOF", err)
	}
}
