package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"banger/internal/agent"
)

// Hybrid vsock (SEMANTICS.md §8): the host connects to uds_path, sends
// "CONNECT <port>\n" and, when the guest accepts, reads "OK <host_port>\n".
// The simulated guest runs the real agent handler on agent.DefaultPort.

// firstHostPort is where Firecracker starts numbering host-side ports.
const firstHostPort = 1 << 30

// maxConnectLine bounds the CONNECT request, as Firecracker's muxer does.
const maxConnectLine = 32

type vsockDev struct {
	cid  uint32
	path string
	l    *net.UnixListener

	mu    sync.Mutex
	conns map[net.Conn]bool
}

func (v *vmm) putVsock(body []byte) error {
	var b vsockBody
	if err := decodeBody(body, &b); err != nil {
		return err
	}
	if v.started {
		return fault(errAfterStart)
	}
	if v.vsock != nil {
		// A second PUT replaces the device and deletes the old socket file.
		v.vsock.close()
		os.Remove(v.vsock.path)
		v.vsock = nil
	}
	dev, err := v.bindVsock(*b.GuestCID, *b.UDSPath)
	if err != nil {
		return err
	}
	v.vsock = dev
	v.bootConfigured = true
	return nil
}

// bindVsock binds the UDS now (at PUT time, like Firecracker) and starts
// accepting host connections. The socket file is never unlinked.
func (v *vmm) bindVsock(cid uint32, path string) (*vsockDev, error) {
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fault("Cannot create backend for vsock device: UnixBind(%s)", osError(err))
	}
	l.SetUnlinkOnClose(false)
	dev := &vsockDev{cid: cid, path: path, l: l, conns: map[net.Conn]bool{}}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go v.handleVsockConn(dev, c)
		}
	}()
	return dev, nil
}

func (d *vsockDev) close() {
	d.l.Close()
	d.reset()
}

// reset closes every forwarded connection (snapshot create resets the device).
func (d *vsockDev) reset() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for c := range d.conns {
		c.Close()
	}
	clear(d.conns)
}

// handleVsockConn does the CONNECT/OK handshake and hands the connection to
// the simulated guest's agent. Whenever no guest process would accept the
// connection, it is closed with no reply, as Firecracker does.
func (v *vmm) handleVsockConn(dev *vsockDev, c net.Conn) {
	port, ok := readConnect(c)
	if !ok || port != agent.DefaultPort || v.sw.agentDown {
		c.Close()
		return
	}
	for v.paused.Load() { // a paused guest accepts nothing until resumed
		time.Sleep(10 * time.Millisecond)
	}
	booted := v.bootedAt.Load()
	if booted == nil || time.Since(*booted) < v.sw.bootDelay {
		c.Close()
		return
	}
	hostPort := v.hostPort.Add(1) - 1 + firstHostPort
	if _, err := fmt.Fprintf(c, "OK %d\n", hostPort); err != nil {
		c.Close()
		return
	}
	tc := &trackedConn{Conn: c, dev: dev}
	dev.mu.Lock()
	dev.conns[tc] = true
	dev.mu.Unlock()
	v.agentConns.push(tc)
}

// readConnect reads "CONNECT <port>\n" one byte at a time, so nothing after
// the line is consumed. The keyword is case-insensitive, the port a decimal
// u32, further words are ignored.
func readConnect(c net.Conn) (uint32, bool) {
	var line []byte
	b := make([]byte, 1)
	for {
		if _, err := c.Read(b); err != nil {
			return 0, false
		}
		if b[0] == '\n' {
			break
		}
		line = append(line, b[0])
		if len(line) >= maxConnectLine {
			return 0, false
		}
	}
	words := strings.Fields(string(line))
	if len(words) < 2 || !strings.EqualFold(words[0], "connect") {
		return 0, false
	}
	port, err := strconv.ParseUint(words[1], 10, 32)
	if err != nil {
		return 0, false
	}
	return uint32(port), true
}

type trackedConn struct {
	net.Conn
	dev  *vsockDev
	once sync.Once
}

// NetConn is the unix connection under t (the agent's tunnel splices on it).
func (t *trackedConn) NetConn() net.Conn { return t.Conn }

func (t *trackedConn) Close() error {
	err := t.Conn.Close()
	t.once.Do(func() {
		t.dev.mu.Lock()
		delete(t.dev.conns, t)
		t.dev.mu.Unlock()
	})
	return err
}

// connQueue is a net.Listener fed with connections that finished the
// handshake; the guest agent's http.Server serves it.
type connQueue struct {
	ch     chan net.Conn
	done   chan struct{}
	closed atomic.Bool
}

func newConnQueue() *connQueue {
	return &connQueue{ch: make(chan net.Conn), done: make(chan struct{})}
}

func (q *connQueue) push(c net.Conn) {
	select {
	case q.ch <- c:
	case <-q.done:
		c.Close()
	}
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.ch:
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	}
}

func (q *connQueue) Close() error {
	if q.closed.CompareAndSwap(false, true) {
		close(q.done)
	}
	return nil
}

func (q *connQueue) Addr() net.Addr { return &net.UnixAddr{Name: "fcfake-guest-vsock", Net: "unix"} }

// serveAgent runs the simulated guest's agent on the handed-over
// connections. The handler is the guest's current one (set at boot).
func (v *vmm) serveAgent() {
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			g := v.guest.Load()
			if g == nil {
				http.Error(w, "guest not booted", http.StatusServiceUnavailable)
				return
			}
			g.handler.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	_ = srv.Serve(v.agentConns)
}
