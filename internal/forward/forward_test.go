package forward

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// fakeGuest is a TCP echo server standing in for a guest port. It counts the
// connections it has open and keeps the ones it accepted so a test can act
// on them.
type fakeGuest struct {
	l    net.Listener
	mu   sync.Mutex
	open int
	all  []net.Conn
	// mode "echo" copies back and half-closes at EOF; "reply" reads to EOF
	// and then writes reply and closes.
	mode  string
	reply []byte
	wg    sync.WaitGroup
}

func newFakeGuest(t *testing.T, mode string) *fakeGuest {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &fakeGuest{l: l, mode: mode}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			g.mu.Lock()
			g.open++
			g.all = append(g.all, c)
			g.mu.Unlock()
			g.wg.Add(1)
			go func() {
				defer g.wg.Done()
				defer func() {
					g.mu.Lock()
					g.open--
					g.mu.Unlock()
					c.Close()
				}()
				switch g.mode {
				case "echo":
					io.Copy(c, c)
					c.(*net.TCPConn).CloseWrite()
					io.Copy(io.Discard, c)
				case "reply":
					io.Copy(io.Discard, c)
					c.Write(g.reply)
				case "hold":
					io.Copy(io.Discard, c)
				}
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		g.mu.Lock()
		for _, c := range g.all {
			c.Close()
		}
		g.mu.Unlock()
		g.wg.Wait()
	})
	return g
}

func (g *fakeGuest) openConns() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.open
}

func (g *fakeGuest) dialer() Dialer {
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", g.l.Addr().String())
	}
}

func listen(t *testing.T, dial Dialer, log *slog.Logger) *Forward {
	t.Helper()
	f, err := Listen(context.Background(), "127.0.0.1:0", dial, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// echoThrough sends n random bytes through addr, half-closes, and checks
// that exactly those bytes come back before EOF.
func echoThrough(addr string, n int) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	want := make([]byte, n)
	rand.Read(want)
	errc := make(chan error, 1)
	go func() {
		if _, err := c.Write(want); err != nil {
			errc <- err
			return
		}
		errc <- c.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		return fmt.Errorf("reading the echo: %w", err)
	}
	if err := <-errc; err != nil {
		return fmt.Errorf("writing: %w", err)
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("echo of %d bytes came back as %d different bytes", n, len(got))
	}
	return nil
}

func TestEcho(t *testing.T) {
	g := newFakeGuest(t, "echo")
	f := listen(t, g.dialer(), nil)
	if f.Addr().Port == 0 || !f.Addr().IP.IsLoopback() {
		t.Fatalf("Addr() = %v, want a picked loopback port", f.Addr())
	}
	for _, n := range []int{0, 1, 100 << 10} {
		if err := echoThrough(f.Addr().String(), n); err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
	}
}

// The guest answers only after it has read the client's EOF: half-close
// from the client reaches the guest, and the guest's close reaches the client.
func TestHalfCloseBothWays(t *testing.T) {
	g := newFakeGuest(t, "reply")
	g.reply = []byte("got your EOF")
	f := listen(t, g.dialer(), nil)
	c, err := net.Dial("tcp", f.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("request")); err != nil {
		t.Fatal(err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(15 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading the reply: %v", err)
	}
	if string(got) != "got your EOF" {
		t.Fatalf("reply = %q", got)
	}
}

func TestManyConcurrentConns(t *testing.T) {
	g := newFakeGuest(t, "echo")
	f := listen(t, g.dialer(), nil)
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- echoThrough(f.Addr().String(), 256<<10)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "every forwarded connection to end", func() bool { return f.Conns() == 0 && g.openConns() == 0 })
}

func TestCloseEndsActiveConns(t *testing.T) {
	g := newFakeGuest(t, "hold")
	f, err := Listen(context.Background(), "127.0.0.1:0", g.dialer(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var clients []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", f.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients = append(clients, c)
	}
	waitFor(t, "3 forwarded connections", func() bool { return f.Conns() == 3 && g.openConns() == 3 })
	if err := f.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if n := f.Conns(); n != 0 {
		t.Fatalf("Conns() after Close = %d", n)
	}
	for _, c := range clients {
		c.SetReadDeadline(time.Now().Add(15 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("a client connection still reads after Close")
		} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatal("a client connection stayed open after Close")
		}
	}
	waitFor(t, "the guest to see its connections end", func() bool { return g.openConns() == 0 })
	if _, err := net.Dial("tcp", f.Addr().String()); err == nil {
		t.Fatal("the listener still accepts after Close")
	}
	if err := f.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestContextEndsForward(t *testing.T) {
	g := newFakeGuest(t, "echo")
	ctx, cancel := context.WithCancel(context.Background())
	f, err := Listen(ctx, "127.0.0.1:0", g.dialer(), nil)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case <-f.Done():
	case <-time.After(15 * time.Second):
		t.Fatal("the forward did not end with its context")
	}
}

// syncBuf is a concurrency-safe log sink.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestDialFailureClosesConnAndLogs(t *testing.T) {
	var logs syncBuf
	log := slog.New(slog.NewTextHandler(&logs, nil))
	dial := func(ctx context.Context) (net.Conn, error) {
		return nil, errors.New("nothing listens on port 9 in the guest")
	}
	f := listen(t, dial, log)
	c, err := net.Dial("tcp", f.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(15 * time.Second))
	n, err := c.Read(make([]byte, 1))
	if n != 0 || err == nil {
		t.Fatalf("Read = %d, %v; want the connection closed", n, err)
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the connection stayed open after the dial failed")
	}
	waitFor(t, "the dial failure in the log", func() bool {
		return strings.Contains(logs.String(), "nothing listens on port 9 in the guest")
	})
	// The forward goes on after a failed dial.
	if _, err := net.Dial("tcp", f.Addr().String()); err != nil {
		t.Fatalf("dial after a failed forward: %v", err)
	}
}

func TestListenOnTakenPort(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, err = Listen(context.Background(), l.Addr().String(), func(context.Context) (net.Conn, error) { return nil, errors.New("unused") }, nil)
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("Listen on a taken port = %v, want EADDRINUSE", err)
	}
}
