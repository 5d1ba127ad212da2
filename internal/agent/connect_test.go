package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"banger/internal/forward"
)

// guestServer is a stateful guest TCP service: "echo" copies back and
// half-closes at EOF; "reply" reads to EOF, then writes its reply and closes.
type guestServer struct {
	l     net.Listener
	mode  string
	reply string
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
}

func startGuestServer(t *testing.T, network, addr, mode string) *guestServer {
	t.Helper()
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Skipf("cannot listen on %s %s: %v", network, addr, err)
	}
	g := &guestServer{l: l, mode: mode, reply: "done"}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			g.mu.Lock()
			g.conns = append(g.conns, c)
			g.mu.Unlock()
			g.wg.Add(1)
			go func() {
				defer g.wg.Done()
				defer c.Close()
				switch g.mode {
				case "echo":
					io.Copy(c, c)
					c.(*net.TCPConn).CloseWrite()
				case "reply":
					io.Copy(io.Discard, c)
					io.WriteString(c, g.reply)
				}
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		g.mu.Lock()
		for _, c := range g.conns {
			c.Close()
		}
		g.mu.Unlock()
		g.wg.Wait()
	})
	return g
}

func (g *guestServer) port() uint16 { return uint16(g.l.Addr().(*net.TCPAddr).Port) }

func dialPort(t *testing.T, dial func() net.Conn, port uint16) (net.Conn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	return DialGuestPort(ctx, dial(), port)
}

func TestConnectEcho(t *testing.T) {
	g := startGuestServer(t, "tcp4", "127.0.0.1:0", "echo")
	dial := execServer(t, Options{})
	tc, err := dialPort(t, dial, g.port())
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	want := make([]byte, 1<<20+17) // several tunnel frames
	rand.Read(want)
	go func() {
		tc.Write(want)
		tc.(interface{ CloseWrite() error }).CloseWrite()
	}()
	tc.SetReadDeadline(time.Now().Add(15 * time.Second))
	got, err := io.ReadAll(tc)
	if err != nil {
		t.Fatalf("reading the echo: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("echo: got %d bytes, want the %d sent", len(got), len(want))
	}
}

// The guest answers only after it read EOF (client half-close reaches the
// guest) and then closes (which reaches the client as EOF, not an error).
func TestConnectHalfClose(t *testing.T) {
	g := startGuestServer(t, "tcp4", "127.0.0.1:0", "reply")
	g.reply = "after your EOF"
	dial := execServer(t, Options{})
	tc, err := dialPort(t, dial, g.port())
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	if _, err := io.WriteString(tc, "question"); err != nil {
		t.Fatal(err)
	}
	cw, ok := tc.(interface{ CloseWrite() error })
	if !ok {
		t.Fatal("the tunnel has no CloseWrite")
	}
	if err := cw.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if _, err := tc.Write([]byte("x")); err == nil {
		t.Fatal("Write after CloseWrite: no error")
	}
	tc.SetReadDeadline(time.Now().Add(15 * time.Second))
	got, err := io.ReadAll(tc)
	if err != nil || string(got) != "after your EOF" {
		t.Fatalf("reply = %q, %v", got, err)
	}
}

func TestConnectRefused(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	dial := execServer(t, Options{})
	_, err = dialPort(t, dial, port)
	var ce *ConnectError
	if !errors.As(err, &ce) || !ce.Refused || ce.Port != port {
		t.Fatalf("DialGuestPort to a closed port = %#v (%v), want a refused *ConnectError", err, err)
	}
	if want := "nothing listens on port " + strconv.Itoa(int(port)) + " in the guest"; err.Error() != want {
		t.Fatalf("error = %q, want %q", err, want)
	}
}

func TestConnectLegacyAndBadRequests(t *testing.T) {
	legacy := execServer(t, Options{Legacy: true})
	if _, err := dialPort(t, legacy, 80); !errors.Is(err, ErrPortsUnsupported) {
		t.Fatalf("DialGuestPort on a legacy agent = %v, want ErrPortsUnsupported", err)
	}
	dial := execServer(t, Options{})
	if _, err := dialPort(t, dial, 0); err == nil || !strings.Contains(err.Error(), "port=1..65535") {
		t.Fatalf("DialGuestPort port 0 = %v", err)
	}
	// A request without the Upgrade header is refused.
	c := dial()
	defer c.Close()
	io.WriteString(c, "POST /v1/connect?port=80 HTTP/1.1\r\nHost: agent\r\nContent-Length: 0\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(15 * time.Second))
	buf := make([]byte, 512)
	n, _ := io.ReadAtLeast(c, buf, 12)
	if !strings.HasPrefix(string(buf[:n]), "HTTP/1.1 400") || !strings.Contains(string(buf[:n]), "Upgrade: banger-tunnel") {
		t.Fatalf("connect without Upgrade answered %q", buf[:n])
	}
}

func TestDialGuestPortContext(t *testing.T) {
	// An agent that never answers: the context ends the request.
	a, b := net.Pipe()
	defer b.Close()
	go io.Copy(io.Discard, b)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := DialGuestPort(ctx, a, 80); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("DialGuestPort with a silent agent = %v, want DeadlineExceeded", err)
	}
}

// With GuestLoopback and ExactListeners (the fake Firecracker) the agent
// reaches only its own loopback address: a host listener on 127.0.0.1 is
// neither listed nor reachable.
func TestConnectGuestLoopback(t *testing.T) {
	own := startGuestServer(t, "tcp4", "127.77.0.9:0", "echo")
	host := startGuestServer(t, "tcp4", "127.0.0.1:0", "echo")
	opts := Options{GuestLoopback: netip.MustParseAddr("127.77.0.9"), ExactListeners: true}
	dial := execServer(t, opts)
	tc, err := dialPort(t, dial, own.port())
	if err != nil {
		t.Fatal(err)
	}
	tc.Close()
	if _, err := dialPort(t, dial, host.port()); err == nil {
		t.Fatal("a host listener on 127.0.0.1 was reachable through a fake guest")
	}
	s := &server{opts: opts.withDefaults()}
	ls, err := s.listeners()
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 1 || ls[0] != (Listener{"tcp", "127.77.0.9", own.port()}) {
		t.Fatalf("listeners = %v, want only the fake guest's own", ls)
	}
}

// A service listening only on IPv6 loopback is reached through ::1.
func TestConnectIPv6Only(t *testing.T) {
	g := startGuestServer(t, "tcp6", "[::1]:0", "reply")
	g.reply = "v6"
	dial := execServer(t, Options{})
	tc, err := dialPort(t, dial, g.port())
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	tc.(interface{ CloseWrite() error }).CloseWrite()
	tc.SetReadDeadline(time.Now().Add(15 * time.Second))
	got, err := io.ReadAll(tc)
	if err != nil || string(got) != "v6" {
		t.Fatalf("reply = %q, %v", got, err)
	}
}

// The tunnel's framing: an abort (closed without the EOF frame) is an
// error, not a clean EOF; writes are split into bounded frames.
func TestTunnelFraming(t *testing.T) {
	a, b := net.Pipe()
	ta := newTunnel(a, a)
	go func() {
		ta.Write(make([]byte, 2*tunnelChunk+1))
		a.Close()
	}()
	var frames []int
	for {
		var hdr [4]byte
		if _, err := io.ReadFull(b, hdr[:]); err != nil {
			break
		}
		n := int(hdr[0])<<24 | int(hdr[1])<<16 | int(hdr[2])<<8 | int(hdr[3])
		frames = append(frames, n)
		io.CopyN(io.Discard, b, int64(n))
	}
	if len(frames) != 3 || frames[0] != tunnelChunk || frames[2] != 1 {
		t.Fatalf("frames = %v", frames)
	}

	c, d := net.Pipe()
	tc := newTunnel(c, c)
	go func() {
		d.Write([]byte{0, 0, 0, 3, 'a', 'b', 'c'})
		d.Close()
	}()
	got, err := io.ReadAll(tc)
	if string(got) != "abc" || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("aborted tunnel: ReadAll = %q, %v; want the bytes and ErrUnexpectedEOF", got, err)
	}
}

// A service bound to another loopback address (127.0.0.9, as systemd's
// resolver uses 127.0.0.53) is found through /proc when 127.0.0.1 refuses.
func TestConnectOtherLoopback(t *testing.T) {
	g := startGuestServer(t, "tcp4", "127.0.0.9:0", "reply")
	g.reply = "other"
	dial := execServer(t, Options{})
	tc, err := dialPort(t, dial, g.port())
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	tc.(interface{ CloseWrite() error }).CloseWrite()
	tc.SetReadDeadline(time.Now().Add(15 * time.Second))
	got, err := io.ReadAll(tc)
	if err != nil || string(got) != "other" {
		t.Fatalf("reply = %q, %v", got, err)
	}
}

// opaqueConn hides the unix socket under it, as a guest's vsock
// connection is no *net.UnixConn: the tunnel takes its plain copy paths.
type opaqueConn struct{ net.Conn }

type opaqueListener struct{ net.Listener }

func (l opaqueListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return opaqueConn{c}, nil
}

// Through forward.Join on both ends (the path of a forward), over a
// transport that cannot splice: 100 concurrent echoes of 256 KiB and
// half-close, checked byte for byte.
func TestConnectPlainPaths(t *testing.T) {
	g := startGuestServer(t, "tcp4", "127.0.0.1:0", "echo")
	sock := filepath.Join(t.TempDir(), "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, opaqueListener{l}, Handler(Options{})) }()
	t.Cleanup(func() { cancel(); <-done })
	f, err := forward.Listen(context.Background(), "127.0.0.1:0", func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "unix", sock)
		if err != nil {
			return nil, err
		}
		return DialGuestPort(ctx, opaqueConn{c}, g.port())
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- echoVia(f.Addr().String(), 256<<10)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

func echoVia(addr string, n int) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	want := make([]byte, n)
	rand.Read(want)
	go func() {
		c.Write(want)
		c.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("echo of %d bytes came back as %d different bytes", n, len(got))
	}
	return nil
}

// choppyReader returns its bytes a few at a time, in pieces of the sizes
// it is given (cycled), so frames and headers arrive split anywhere.
type choppyReader struct {
	b     []byte
	sizes []int
	i     int
}

func (r *choppyReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), len(r.b), r.sizes[r.i%len(r.sizes)])
	r.i++
	copy(p, r.b[:n])
	r.b = r.b[n:]
	return n, nil
}

// frames is the tunnel encoding of payloads, then an EOF frame when eof.
func frames(payloads [][]byte, eof bool) []byte {
	var b []byte
	for _, p := range payloads {
		b = append(b, byte(len(p)>>24), byte(len(p)>>16), byte(len(p)>>8), byte(len(p)))
		b = append(b, p...)
	}
	if eof {
		b = append(b, 0, 0, 0, 0)
	}
	return b
}

// WriteTo reads frames however the connection splits them (several in one
// read, a header across two) and writes exactly their payloads; a tunnel
// cut mid-frame or without its EOF frame is an error.
func TestTunnelWriteToDeframes(t *testing.T) {
	var payloads [][]byte
	var want []byte
	for i, n := range []int{1, 3, 70 << 10, 5, tunnelChunk, 2, 200 << 10, 4, 9} {
		p := make([]byte, n)
		for j := range p {
			p[j] = byte(i*31 + j)
		}
		payloads = append(payloads, p)
		want = append(want, p...)
	}
	wire := frames(payloads, true)
	for _, sizes := range [][]int{{1}, {3, 5, 7}, {4}, {64 << 10}, {1 << 20}, {6, 300 << 10, 2}} {
		c, _ := net.Pipe()
		tn := newTunnel(c, &choppyReader{b: wire, sizes: sizes})
		var got bytes.Buffer
		n, err := tn.WriteTo(&got)
		if err != nil || n != int64(len(want)) || !bytes.Equal(got.Bytes(), want) {
			t.Fatalf("reads of %v: WriteTo = %d, %v; same bytes %v (want %d)", sizes, n, err, bytes.Equal(got.Bytes(), want), len(want))
		}
		c.Close()
	}
	for name, wire := range map[string][]byte{
		"mid-frame":       frames(payloads, true)[:100],
		"mid-header":      frames(payloads[:2], true)[:10],
		"no EOF frame":    frames(payloads, false),
		"oversized frame": {0xff, 0, 0, 0, 1},
	} {
		c, _ := net.Pipe()
		tn := newTunnel(c, &choppyReader{b: wire, sizes: []int{7}})
		if _, err := tn.WriteTo(io.Discard); err == nil {
			t.Errorf("%s: WriteTo gave no error", name)
		}
		c.Close()
	}
}

// TestTunnelSpliceFrames sends bytes written in uneven pieces through the
// splicing ReadFrom onto a unix socket and deframes them by hand: every
// frame's header (written into the pipe ahead of its payload) must count
// exactly the payload behind it. From TCP the pieces arrive as skbs of
// every size; from a unix socket each 1-byte write is an skb of its own,
// so a frame's pieces fill the pipe's slots before all its bytes are in
// and it goes out in parts.
func TestTunnelSpliceFrames(t *testing.T) {
	t.Run("tcp", func(t *testing.T) {
		tl, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer tl.Close()
		client, err := net.Dial("tcp4", tl.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		src, err := tl.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		spliceFrames(t, client.(*net.TCPConn), src, 8<<20, []int{1, 7, 4096 + 3, 65536, 200000, 13})
	})
	t.Run("unix-1-byte-skbs", func(t *testing.T) {
		client, src := unixPair(t)
		spliceFrames(t, client, src, 256<<10, []int{1})
	})
}

// unixPair is a connected pair of unix stream sockets.
func unixPair(t *testing.T) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(t.TempDir(), "u"), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ul.Close()
	a, err := net.DialUnix("unix", nil, ul.Addr().(*net.UnixAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	b, err := ul.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return a, b
}

// spliceFrames writes size random bytes to client in pieces of the given
// sizes (in turn), runs the tunnel's ReadFrom(src) onto a unix socket and
// checks the frames that come out of it.
func spliceFrames(t *testing.T, client interface {
	net.Conn
	CloseWrite() error
}, src net.Conn, size int, pieces []int) {
	near, far := unixPair(t)
	want := make([]byte, size)
	rand.Read(want)
	go func() {
		for off, i := 0, 0; off < len(want); i++ {
			n := min(len(want)-off, pieces[i%len(pieces)])
			if _, err := client.Write(want[off : off+n]); err != nil {
				return
			}
			off += n
		}
		client.CloseWrite()
	}()
	tun := newTunnel(near, near)
	sent := make(chan error, 1)
	go func() {
		n, err := tun.ReadFrom(src)
		if err == nil && n != int64(len(want)) {
			err = fmt.Errorf("ReadFrom moved %d bytes, want %d", n, len(want))
		}
		sent <- err
		near.CloseWrite()
	}()
	far.SetReadDeadline(time.Now().Add(30 * time.Second))
	var got bytes.Buffer
	frames := 0
	for {
		var hdr [4]byte
		if _, err := io.ReadFull(far, hdr[:]); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("reading frame %d's header: %v", frames, err)
		}
		n := int64(hdr[0])<<24 | int64(hdr[1])<<16 | int64(hdr[2])<<8 | int64(hdr[3])
		if n == 0 || n > maxTunnelFrame {
			t.Fatalf("frame %d: header says %d bytes", frames, n)
		}
		if _, err := io.CopyN(&got, far, n); err != nil {
			t.Fatalf("frame %d: reading its %d bytes: %v", frames, n, err)
		}
		frames++
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("deframed %d bytes in %d frames; they differ from the %d sent", got.Len(), frames, len(want))
	}
}
