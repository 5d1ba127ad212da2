package httpconn

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"runtime/metrics"
	"strings"
	"testing"
	"time"
)

// server answers connections on a unix socket one at a time, on one
// goroutine, with answer(req) (nil: hang until the client closes). It
// records each request it read.
type server struct {
	path string
	ln   net.Listener
	reqs chan *http.Request
	body chan string
}

func newServer(t *testing.T, answer func(*http.Request) *http.Response) *server {
	t.Helper()
	s := &server{path: filepath.Join(t.TempDir(), "api.sock"), reqs: make(chan *http.Request, 100), body: make(chan string, 100)}
	ln, err := net.Listen("unix", s.path)
	if err != nil {
		t.Fatal(err)
	}
	s.ln = ln
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			br := bufio.NewReader(c)
			req, err := http.ReadRequest(br)
			if err != nil {
				c.Close()
				continue
			}
			b, _ := io.ReadAll(req.Body)
			s.reqs <- req
			s.body <- string(b)
			resp := answer(req)
			if resp == nil {
				io.Copy(io.Discard, c) // until the client goes
				c.Close()
				continue
			}
			resp.Write(c)
			// The client closes its end once it has read the answer.
			io.Copy(io.Discard, c)
			c.Close()
		}
	}()
	return s
}

func (s *server) client(headerTimeout time.Duration) *http.Client {
	return &http.Client{Transport: &Transport{
		Dial: func(ctx context.Context) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", s.path)
		},
		HeaderTimeout: headerTimeout,
	}}
}

func ok(text string) func(*http.Request) *http.Response {
	return func(req *http.Request) *http.Response {
		return &http.Response{StatusCode: 200, ProtoMajor: 1, ProtoMinor: 1, ContentLength: int64(len(text)),
			Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(strings.NewReader(text))}
	}
}

func TestGetAndPost(t *testing.T) {
	s := newServer(t, ok(`{"ok":true}`))
	c := s.client(0)
	resp, err := c.Get("http://localhost/healthz")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(b) != `{"ok":true}` || resp.StatusCode != 200 {
		t.Fatalf("got %d %q %v", resp.StatusCode, b, err)
	}
	req := <-s.reqs
	<-s.body
	if req.Method != "GET" || req.URL.Path != "/healthz" || !req.Close {
		t.Fatalf("server read %s %s close=%v, want GET /healthz with Connection: close", req.Method, req.URL.Path, req.Close)
	}
	resp, err = c.Post("http://localhost/actions", "application/json", strings.NewReader(`{"action_type":"InstanceStart"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if req := <-s.reqs; req.Method != "POST" || req.ContentLength != 31 {
		t.Fatalf("server read %s with length %d", req.Method, req.ContentLength)
	}
	if got := <-s.body; got != `{"action_type":"InstanceStart"}` {
		t.Fatalf("server read body %q", got)
	}
	if _, err := resp.Body.Read(make([]byte, 1)); err == nil {
		t.Fatal("a read after Close succeeded")
	}
}

func goroutinesCreated() uint64 {
	s := []metrics.Sample{{Name: "/sched/goroutines-created:goroutines"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// The point of the package: a request starts no goroutine (net/http's
// Transport starts three per connection).
func TestNoGoroutinePerRequest(t *testing.T) {
	s := newServer(t, ok("{}"))
	c := s.client(5 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	get := func() {
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://localhost/x", nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		<-s.reqs
		<-s.body
	}
	get() // anything started once (the netpoller) starts here
	before := goroutinesCreated()
	for range 50 {
		get()
	}
	// The runtime starts a few of its own now and then (mark workers,
	// cleanup goroutines); a goroutine per request would be 50.
	if n := goroutinesCreated() - before; n >= 10 {
		t.Fatalf("50 requests started %d goroutines, want none of their own", n)
	}
}

func TestContextEndsTheWait(t *testing.T) {
	s := newServer(t, func(*http.Request) *http.Response { return nil })
	c := s.client(0)

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://localhost/hang", nil)
	start := time.Now()
	_, err := c.Do(req)
	if !errors.Is(err, context.Canceled) || time.Since(start) > 5*time.Second {
		t.Fatalf("cancelled request: %v after %s, want context.Canceled at once", err, time.Since(start))
	}

	ctx, cancel = context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	req, _ = http.NewRequestWithContext(ctx, "GET", "http://localhost/hang", nil)
	if _, err := c.Do(req); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("request past its deadline: %v, want context.DeadlineExceeded", err)
	}
}

func TestHeaderTimeout(t *testing.T) {
	s := newServer(t, func(*http.Request) *http.Response { return nil })
	c := s.client(100 * time.Millisecond)
	_, err := c.Get("http://localhost/hang")
	if err == nil || !strings.Contains(err.Error(), "no answer within 100ms") {
		t.Fatalf("got %v, want the header timeout named", err)
	}
}

// rawServer accepts one connection on a fresh socket, reads a request,
// writes reply as it stands and waits for the client to go. It returns a
// client for it.
func rawServer(t *testing.T, reply string) *http.Client {
	t.Helper()
	path := filepath.Join(t.TempDir(), "raw.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		io.WriteString(c, reply)
		io.Copy(io.Discard, c)
	}()
	return &http.Client{Transport: &Transport{Dial: func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}}
}

// A context that ends while the body is read ends the read.
func TestContextEndsTheBody(t *testing.T) {
	c := rawServer(t, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart of it")
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://localhost/big", nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	time.AfterFunc(100*time.Millisecond, cancel)
	b, err := io.ReadAll(resp.Body)
	if !errors.Is(err, context.Canceled) || string(b) != "part of it" {
		t.Fatalf("reading a body whose context ended: %q, %v, want what came and context.Canceled", b, err)
	}
}

// An answer that is not HTTP is an error that says what was being done.
func TestBadAnswer(t *testing.T) {
	c := rawServer(t, "SSH-2.0-OpenSSH_9.2\r\n")
	_, err := c.Get("http://localhost/x")
	if err == nil || !strings.Contains(err.Error(), "reading the answer") {
		t.Fatalf("got %v, want an error reading the answer", err)
	}
}

func TestDialError(t *testing.T) {
	closed := false
	tr := &Transport{Dial: func(context.Context) (net.Conn, error) { return nil, errors.New("no such socket") }}
	req, _ := http.NewRequest("POST", "http://localhost/x", &trackClose{r: strings.NewReader("x"), closed: &closed})
	_, err := (&http.Client{Transport: tr}).Do(req)
	if err == nil || !strings.Contains(err.Error(), "no such socket") {
		t.Fatalf("got %v", err)
	}
	if !closed {
		t.Fatal("the request's body was not closed after the dial failed")
	}
}

type trackClose struct {
	r      io.Reader
	closed *bool
}

func (t *trackClose) Read(p []byte) (int, error) { return t.r.Read(p) }
func (t *trackClose) Close() error               { *t.closed = true; return nil }
