package agent

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"banger/internal/forward"
)

// PathConnect opens a byte tunnel to a guest TCP port (POST ?port=N,
// upgraded to the tunnel framing below).
const PathConnect = "/v1/connect"

// connectUpgrade is the Upgrade token of /v1/connect.
const connectUpgrade = "banger-tunnel"

// guestDialTimeout bounds the agent's connect to the guest port.
const guestDialTimeout = 5 * time.Second

// The tunnel after the 101 carries frames both ways: a payload length
// (uint32, big endian) and that many bytes. A frame of length 0 is EOF
// (the sender half-closed); Firecracker's hybrid vsock ends the whole
// connection when the host half-closes its socket, so half-close travels
// in band. Closing the connection is an abort. Frames are at most
// maxTunnelFrame; a writer sends up to tunnelChunk at a time.
const (
	maxTunnelFrame = 1 << 20
	tunnelChunk    = 256 << 10
)

// ConnectError is a guest port the agent could not connect to.
type ConnectError struct {
	Port uint16
	// Refused: nothing listens on the port in the guest.
	Refused bool
	Msg     string
}

func (e *ConnectError) Error() string { return e.Msg }

// connectErrorBody is the body of a 4xx/5xx answer to /v1/connect.
type connectErrorBody struct {
	Error   string `json:"error"`
	Refused bool   `json:"refused,omitempty"`
}

// connect serves POST /v1/connect?port=N: it connects to the guest port,
// answers 101 and joins the two connections until both sides are done.
func (s *server) connect(w http.ResponseWriter, r *http.Request) {
	port, err := strconv.ParseUint(r.URL.Query().Get("port"), 10, 16)
	if err != nil || port == 0 {
		writeJSON(w, http.StatusBadRequest, connectErrorBody{Error: fmt.Sprintf("connect needs ?port=1..65535, not %q", r.URL.Query().Get("port"))})
		return
	}
	if !strings.EqualFold(r.Header.Get("Upgrade"), connectUpgrade) {
		writeJSON(w, http.StatusBadRequest, connectErrorBody{Error: "connect needs Upgrade: " + connectUpgrade})
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		writeJSON(w, http.StatusInternalServerError, connectErrorBody{Error: "connection cannot be hijacked"})
		return
	}
	guest, target, err := s.dialGuest(r.Context(), uint16(port))
	if err != nil {
		body := connectErrorBody{Error: fmt.Sprintf("connecting to %s in the guest: %v", target, errnoText(err))}
		if errors.Is(err, syscall.ECONNREFUSED) {
			body = connectErrorBody{Error: fmt.Sprintf("nothing listens on port %d in the guest", port), Refused: true}
		}
		s.opts.Logger.Info("connect: guest port unreachable", "port", port, "err", err)
		writeJSON(w, http.StatusBadGateway, body)
		return
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		guest.Close()
		s.opts.Logger.Error("connect: hijacking connection", "err", err)
		return
	}
	// The hijacked connection keeps the server's deadlines; a tunnel is
	// open-ended.
	conn.SetDeadline(time.Time{})
	if _, err := io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: "+connectUpgrade+"\r\n\r\n"); err != nil {
		conn.Close()
		guest.Close()
		return
	}
	if err := forward.Join(newTunnel(conn, brw.Reader), guest); err != nil {
		s.opts.Logger.Debug("connect: tunnel ended with an error", "port", port, "err", err)
	}
}

// dialGuest connects to the guest port at GuestLoopback, the common case
// (a service on 127.0.0.1 or 0.0.0.0). Refused there, it looks for where
// the port does listen (connectTarget) and dials that, so reading /proc
// costs only the unusual case.
func (s *server) dialGuest(ctx context.Context, port uint16) (net.Conn, netip.AddrPort, error) {
	d := net.Dialer{Timeout: guestDialTimeout}
	target := netip.AddrPortFrom(s.opts.GuestLoopback, port)
	c, err := d.DialContext(ctx, "tcp", target.String())
	if err == nil || !errors.Is(err, syscall.ECONNREFUSED) {
		return c, target, err
	}
	alt := s.connectTarget(port)
	if alt == target {
		return nil, target, err
	}
	c, err = d.DialContext(ctx, "tcp", alt.String())
	return c, alt, err
}

// connectTarget picks the address to dial for a guest port from its
// listeners: the address of a loopback listener, GuestLoopback for a
// wildcard IPv4 one, ::1 for an IPv6 loopback or wildcard one, else a
// specific address the port is bound to; GuestLoopback when nothing
// listens (the dial then says so).
func (s *server) connectTarget(port uint16) netip.AddrPort {
	fallback := netip.AddrPortFrom(s.opts.GuestLoopback, port)
	ls, err := s.listeners()
	if err != nil {
		return fallback
	}
	var v6, specific netip.AddrPort
	for _, l := range ls {
		if l.Port != port {
			continue
		}
		a, err := netip.ParseAddr(l.Addr)
		if err != nil {
			continue
		}
		a = a.Unmap()
		switch {
		case a.Is4() && (a == s.opts.GuestLoopback || a.IsUnspecified()):
			return fallback
		case a.Is4() && a.IsLoopback():
			return netip.AddrPortFrom(a, port)
		case a.Is6() && (a.IsLoopback() || a.IsUnspecified()):
			v6 = netip.AddrPortFrom(netip.IPv6Loopback(), port)
		case !specific.IsValid():
			specific = netip.AddrPortFrom(a, port)
		}
	}
	switch {
	case v6.IsValid():
		return v6
	case specific.IsValid():
		return specific
	}
	return fallback
}

// DialGuestPort asks the agent on conn (a fresh connection to it, already
// through Firecracker's hybrid vsock handshake) to connect to the guest's
// TCP port and returns the tunnel: a net.Conn whose bytes are the guest
// connection's, with CloseWrite for half-close. On failure conn is closed;
// a port nothing listens on gives a *ConnectError with Refused, an agent
// without the endpoint ErrPortsUnsupported. ctx bounds the request only.
func DialGuestPort(ctx context.Context, conn net.Conn, port uint16) (net.Conn, error) {
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	tc, err := startTunnel(conn, port)
	if !stop() || ctx.Err() != nil {
		conn.Close()
		return nil, fmt.Errorf("connecting to guest port %d: %w", port, ctx.Err())
	}
	if err != nil {
		conn.Close()
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			// The conn deadline (ctx's) fired before ctx itself did.
			return nil, fmt.Errorf("connecting to guest port %d: %w", port, context.DeadlineExceeded)
		}
		return nil, err
	}
	conn.SetDeadline(time.Time{})
	return tc, nil
}

func startTunnel(conn net.Conn, port uint16) (net.Conn, error) {
	req := fmt.Sprintf("POST %s?port=%d HTTP/1.1\r\nHost: agent\r\nConnection: Upgrade\r\nUpgrade: %s\r\nContent-Length: 0\r\n\r\n", PathConnect, port, connectUpgrade)
	if _, err := io.WriteString(conn, req); err != nil {
		return nil, fmt.Errorf("sending connect request for guest port %d: %w", port, err)
	}
	br := bufio.NewReaderSize(conn, 64<<10)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, fmt.Errorf("reading connect response for guest port %d: %w", port, err)
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return newTunnel(conn, br), nil
	}
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed {
		return nil, ErrPortsUnsupported
	}
	var eb connectErrorBody
	if json.Unmarshal(raw, &eb) == nil && eb.Error != "" {
		return nil, &ConnectError{Port: port, Refused: eb.Refused, Msg: eb.Error}
	}
	msg := strings.TrimSpace(string(raw))
	if len(msg) > 200 {
		msg = msg[:200] + "..."
	}
	return nil, fmt.Errorf("agent %s answered %s: %s", PathConnect, resp.Status, msg)
}

// tunnel is one end of the framed byte stream over an agent connection.
type tunnel struct {
	net.Conn
	r io.Reader // conn behind any bytes already buffered

	rmu       sync.Mutex
	remaining int // payload bytes left in the current frame
	rEOF      bool

	wmu  sync.Mutex
	wEOF bool
	wbuf []byte // header and payload of Write, grown to what it is given
	// rbuf and wplain are the copy paths' buffers of WriteTo and
	// ReadFrom; wplain has room for a frame header in front. grow: WriteTo
	// has seen a bulk transfer and reads whole frames.
	rbuf, wplain []byte
	grow         bool
}

// plainChunk is the plain copy paths' buffer size: a guest may hold a
// hundred tunnels open.
const plainChunk = 64 << 10

// plainBuf allocates *b on first use.
func plainBuf(b *[]byte) []byte {
	if *b == nil {
		*b = make([]byte, 4+plainChunk)
	}
	return *b
}

func newTunnel(conn net.Conn, r io.Reader) *tunnel {
	growUnixBuffers(conn)
	return &tunnel{Conn: conn, r: r}
}

func (t *tunnel) Read(p []byte) (int, error) {
	t.rmu.Lock()
	defer t.rmu.Unlock()
	if len(p) == 0 {
		return 0, nil
	}
	for t.remaining == 0 {
		if t.rEOF {
			return 0, io.EOF
		}
		if err := t.readHeader(); err != nil {
			return 0, err
		}
	}
	if len(p) > t.remaining {
		p = p[:t.remaining]
	}
	n, err := t.r.Read(p)
	t.remaining -= n
	if errors.Is(err, io.EOF) {
		if n > 0 {
			err = nil // the next Read reports the truncation
		} else {
			err = fmt.Errorf("tunnel closed mid-frame: %w", io.ErrUnexpectedEOF)
		}
	}
	return n, err
}

// readHeader reads the next frame header: remaining is set, or rEOF and
// io.EOF for the EOF frame.
func (t *tunnel) readHeader() error {
	var hdr [4]byte
	if _, err := io.ReadFull(t.r, hdr[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return errTunnelAborted
		}
		return err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > maxTunnelFrame {
		return fmt.Errorf("tunnel frame of %d bytes is larger than %d", n, maxTunnelFrame)
	}
	if n == 0 {
		t.rEOF = true
		return io.EOF
	}
	t.remaining = int(n)
	return nil
}

func (t *tunnel) Write(p []byte) (int, error) {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	if t.wEOF {
		return 0, fmt.Errorf("writing to the tunnel after CloseWrite: %w", net.ErrClosed)
	}
	if want := 4 + min(len(p), tunnelChunk); len(t.wbuf) < want {
		t.wbuf = make([]byte, want)
	}
	written := 0
	for len(p) > 0 {
		c := min(len(p), tunnelChunk)
		binary.BigEndian.PutUint32(t.wbuf, uint32(c))
		copy(t.wbuf[4:], p[:c])
		if _, err := t.Conn.Write(t.wbuf[:4+c]); err != nil {
			return written, err
		}
		written += c
		p = p[c:]
	}
	return written, nil
}

// CloseWrite sends EOF to the other end; reading goes on.
func (t *tunnel) CloseWrite() error {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	if t.wEOF {
		return nil
	}
	t.wEOF = true
	var hdr [4]byte
	_, err := t.Conn.Write(hdr[:])
	return err
}
