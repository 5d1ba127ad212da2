package daemon

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/client"
	"banger/internal/config"
)

// socketServer is an in-process daemon served on a temp socket with the
// given limits, through the same listener and server the daemon uses.
type socketServer struct {
	d      *Daemon
	socket string
	pl     *peerListener
	cl     *client.Client
}

func serveWithLimits(t *testing.T, lim serverLimits) *socketServer {
	t.Helper()
	getenv := testEnv(t)
	paths, err := config.DefaultPaths(getenv)
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := config.Load(paths, getenv)
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(context.Background(), Options{Loaded: loaded, Host: newFakeHost()})
	if err != nil {
		t.Fatal(err)
	}
	l, err := listenSocket(paths.Socket)
	if err != nil {
		d.close()
		t.Fatal(err)
	}
	pl := newPeerListener(l, d.uid, lim, nil)
	srv := d.httpServerWith(lim)
	go srv.Serve(pl)
	t.Cleanup(func() {
		d.stopOnce.Do(func() { close(d.stopping) }) // ends /events streams
		srv.Close()
		d.close()
	})
	return &socketServer{d: d, socket: paths.Socket, pl: pl, cl: client.New(paths.Socket)}
}

// raiseNoFile makes room for n more descriptors or skips.
func raiseNoFile(t *testing.T, n uint64) {
	t.Helper()
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	if rl.Cur >= n+256 {
		return
	}
	if rl.Max < n+256 {
		t.Skipf("needs %d open files; RLIMIT_NOFILE hard limit is %d", n+256, rl.Max)
	}
	old := rl
	rl.Cur = n + 256
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
}

// waitClosed reads c until the server closes it, failing if that has
// not happened by the deadline.
func waitClosed(c net.Conn, deadline time.Time) error {
	c.SetReadDeadline(deadline)
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("still open at the deadline")
	}
	return nil // EOF or reset: closed by the server
}

// TestIdleAndSlowConnectionsDropped holds 1,000 connections that send
// nothing, half a header or half a body: all are closed within the
// timeouts, and the daemon answers RPCs meanwhile and after.
func TestIdleAndSlowConnectionsDropped(t *testing.T) {
	const n = 1000
	raiseNoFile(t, 2*n+64)
	lim := serverLimits{HeaderTimeout: time.Second, BodyTimeout: time.Second, IdleTimeout: 2 * time.Second,
		EventsWriteTimeout: 30 * time.Second, PerUID: 4 * n, Total: 4 * n}
	s := serveWithLimits(t, lim)
	ctx := context.Background()

	start := time.Now()
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < n; i++ {
		c, err := net.Dial("unix", s.socket)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		conns = append(conns, c)
		switch i % 3 {
		case 1: // half a header
			_, err = io.WriteString(c, "POST /rpc HTTP/1.1\r\nHost: bangerd\r\nContent-")
		case 2: // the header, then half the body
			_, err = io.WriteString(c, "POST /rpc HTTP/1.1\r\nHost: bangerd\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"jsonrpc\":\"2.0\",")
		}
		if err != nil {
			t.Fatalf("writing on %d: %v", i, err)
		}
	}
	if _, err := s.cl.Ping(ctx); err != nil {
		t.Fatalf("RPC while %d connections are held: %v", n, err)
	}
	if open := s.pl.open(); open < n/2 {
		t.Errorf("only %d connections admitted while holding %d", open, n)
	}

	// Every connection must be gone by header + body timeout, with slack
	// for a loaded machine; none may outlive the deadline.
	deadline := start.Add(lim.HeaderTimeout + lim.BodyTimeout + 5*time.Second)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var open []int
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := waitClosed(c, deadline); err != nil {
				mu.Lock()
				open = append(open, i)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(open) > 0 {
		t.Fatalf("%d of %d connections still open after %s (first: #%d)", len(open), n, time.Since(start).Round(time.Millisecond), open[0])
	}
	t.Logf("%d connections closed by the server within %s", n, time.Since(start).Round(time.Millisecond))
	if _, err := s.cl.Ping(ctx); err != nil {
		t.Fatalf("RPC after the flood: %v", err)
	}
	var l api.VMList
	if err := s.cl.Call(ctx, api.MethodVMList, nil, &l); err != nil {
		t.Fatalf("vm.list after the flood: %v", err)
	}
}

// TestHalfBodyGetsAnError: a body that stops arriving gets a JSON-RPC
// error once the body timeout passes, then the connection closes.
func TestHalfBodyGetsAnError(t *testing.T) {
	s := serveWithLimits(t, serverLimits{HeaderTimeout: time.Second, BodyTimeout: 500 * time.Millisecond, IdleTimeout: time.Second, PerUID: 10, Total: 10})
	c, err := net.Dial("unix", s.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "POST /rpc HTTP/1.1\r\nHost: bangerd\r\nContent-Length: 100\r\n\r\n{\"jsonrpc\"")
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no response to a stalled body: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(b), "the body did not arrive within 500ms") {
		t.Errorf("response %q, want a read timeout error", b)
	}
}

// TestConnectionCaps: a connection over the per-uid or the total cap is
// closed at once; a freed slot admits the next.
func TestConnectionCaps(t *testing.T) {
	for _, tc := range []struct {
		name          string
		perUID, total int
	}{
		{"per uid", 4, 100},
		{"total", 100, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := serveWithLimits(t, serverLimits{HeaderTimeout: time.Minute, BodyTimeout: time.Minute, IdleTimeout: time.Minute,
				PerUID: tc.perUID, Total: tc.total})
			var held []net.Conn
			defer func() {
				for _, c := range held {
					c.Close()
				}
			}()
			for len(held) < 4 {
				c, err := net.Dial("unix", s.socket)
				if err != nil {
					t.Fatal(err)
				}
				held = append(held, c)
			}
			waitFor(t, func() bool { return s.pl.open() == 4 })
			over, err := net.Dial("unix", s.socket)
			if err != nil {
				t.Fatal(err)
			}
			defer over.Close()
			if err := waitClosed(over, time.Now().Add(5*time.Second)); err != nil {
				t.Fatalf("connection over the cap: %v", err)
			}
			if _, err := s.cl.Ping(context.Background()); err == nil {
				t.Error("RPC over the cap answered")
			}
			held[0].Close()
			held = held[1:]
			waitFor(t, func() bool { _, err := s.cl.Ping(context.Background()); return err == nil })
		})
	}
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); !ok(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("condition not reached in 5s")
		}
	}
}

// TestEventsOutliveTimeouts: an /events stream stays open past every
// read and idle timeout and still delivers events.
func TestEventsOutliveTimeouts(t *testing.T) {
	lim := serverLimits{HeaderTimeout: 300 * time.Millisecond, BodyTimeout: 300 * time.Millisecond, IdleTimeout: 300 * time.Millisecond,
		EventsWriteTimeout: time.Second, PerUID: 10, Total: 10}
	s := serveWithLimits(t, lim)
	c, err := net.Dial("unix", s.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET "+api.PathEvents+" HTTP/1.1\r\nHost: bangerd\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("events: %v %v", resp, err)
	}
	time.Sleep(4 * (lim.HeaderTimeout + lim.IdleTimeout))
	s.d.events.publish(api.Event{Kind: api.EventImage, Time: time.Now(), Message: "still here"})
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if strings.Contains(sc.Text(), "still here") {
			return
		}
	}
	t.Fatalf("stream ended before the event: %v", sc.Err())
}

// TestLongCallOutlivesBodyTimeout: a handler that runs longer than the
// body timeout keeps its request context (the body deadline must not reach
// the server's background read of the connection).
func TestLongCallOutlivesBodyTimeout(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := readBody(w, r, 1<<20, 200*time.Millisecond); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		select {
		case <-r.Context().Done():
			io.WriteString(w, "cancelled")
		case <-time.After(time.Second):
			io.WriteString(w, "ok")
		}
	})}
	go srv.Serve(l)
	defer srv.Close()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	resp, err := hc.Post("http://x/rpc", "application/json", strings.NewReader(`{"a":1}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if b, _ := io.ReadAll(resp.Body); string(b) != "ok" {
		t.Errorf("long handler got %q, want ok", b)
	}
}

func TestAdmit(t *testing.T) {
	l := newPeerListener(nil, 1000, serverLimits{PerUID: 1, Total: 2}, nil)
	for _, tc := range []struct {
		name string
		p    peerCred
		ok   bool
	}{
		{"no credential", peerCred{}, false},
		{"foreign uid", peerCred{UID: 1001, OK: true}, false},
		{"own uid", peerCred{UID: 1000, OK: true}, true},
		{"own uid over its cap", peerCred{UID: 1000, OK: true}, false},
		{"root", peerCred{UID: 0, OK: true}, true},
		{"root over the total", peerCred{UID: 0, OK: true}, false},
	} {
		if err := l.admit(tc.p); (err == nil) != tc.ok {
			t.Errorf("%s: admit = %v, want ok %v", tc.name, err, tc.ok)
		}
	}
	l.release(1000)
	if err := l.admit(peerCred{UID: 1000, OK: true}); err != nil {
		t.Errorf("after a release: %v", err)
	}
}

// TestUnreadableCredentialDropped: a listener whose connections carry no
// SO_PEERCRED (TCP) has every connection closed at accept.
func TestUnreadableCredentialDropped(t *testing.T) {
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pl := newPeerListener(tl, os.Getuid(), serverLimits{PerUID: 10, Total: 10}, nil)
	defer pl.Close()
	go func() {
		for {
			c, err := pl.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("admitted"))
		}
	}()
	c, err := net.Dial("tcp", tl.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	var ne net.Error
	if len(b) != 0 || (errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("read %q, %v: want the connection closed unanswered", b, err)
	}
}

// TestForeignUIDDropped connects as another uid (a copy of this test
// binary run as nobody) to a socket it may open: the connection is closed
// at accept, unanswered.
func TestForeignUIDDropped(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs a client as another uid")
	}
	dir, err := os.MkdirTemp("/tmp", "bgd-foreign-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	sock := filepath.Join(dir, "s.sock")
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(sock, 0o666)
	s := serveWithLimits(t, serverLimits{HeaderTimeout: 5 * time.Second, BodyTimeout: 5 * time.Second, IdleTimeout: 5 * time.Second, PerUID: 10, Total: 10})
	pl := newPeerListener(ul, s.d.uid, serverLimits{PerUID: 10, Total: 10}, nil)
	srv := s.d.httpServerWith(serverLimits{HeaderTimeout: 5 * time.Second, PerUID: 10, Total: 10})
	go srv.Serve(pl)
	defer srv.Close()

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "daemon.test")
	if b, err := os.ReadFile(self); err != nil || os.WriteFile(bin, b, 0o755) != nil {
		t.Fatalf("copying the test binary: %v", err)
	}
	cmd := exec.Command(bin, "-test.run=^TestForeignUIDHalf$", "-test.v")
	cmd.Env = append(os.Environ(), "BANGER_FOREIGN_SOCKET="+sock)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestForeignUIDHalf") {
		t.Fatalf("foreign client: %v\n%s", err, out)
	}
	if pl.open() != 0 {
		t.Errorf("%d foreign connections admitted", pl.open())
	}
}

// TestForeignUIDHalf runs only as TestForeignUIDDropped's client.
func TestForeignUIDHalf(t *testing.T) {
	sock := os.Getenv("BANGER_FOREIGN_SOCKET")
	if sock == "" {
		t.Skip("runs only as the foreign client of TestForeignUIDDropped")
	}
	if os.Getuid() == 0 {
		t.Fatal("must not run as root")
	}
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	body := `{"jsonrpc":"2.0","id":1,"method":"daemon.status"}`
	fmt.Fprintf(c, "POST /rpc HTTP/1.1\r\nHost: bangerd\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	var ne net.Error
	if len(b) != 0 || (errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("foreign uid got %q, %v: want the connection closed unanswered", b, err)
	}
}
