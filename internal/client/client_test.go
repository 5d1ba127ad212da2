package client

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/api"
)

// A daemon killed a moment ago can accept a connection and drop it: a
// status probe must read that as no daemon, so `daemon start` starts one.
func TestPingOnDroppedConnectionIsNoDaemon(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "d.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close() // no reply: EOF (or a reset) on the client
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := New(sock).Ping(ctx); !errors.Is(err, ErrNoDaemon) {
		t.Fatalf("Ping against a dropping listener: %v, want ErrNoDaemon", err)
	}
	// A socket nobody listens on is no daemon too, as before.
	ln.Close()
	if _, err := New(sock).Ping(ctx); !errors.Is(err, ErrNoDaemon) {
		t.Fatalf("Ping against a closed socket: %v, want ErrNoDaemon", err)
	}
}

// A daemon that stops in the middle of a call (`daemon stop` during an
// image build) gives a sentence naming the call, not `Post ...: EOF`.
func TestCallDroppedMidway(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "d.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		buf := make([]byte, 4096)
		c.Read(buf) // the request arrives, then the daemon goes away
		c.Close()
	}()
	err = New(sock).Call(context.Background(), "image.build", map[string]string{"name": "x"}, nil)
	if !errors.Is(err, ErrDropped) || !strings.Contains(err.Error(), "image.build") || strings.Contains(err.Error(), "Post ") {
		t.Fatalf("call dropped midway: %v", err)
	}
}

// serveReplies answers every call on a unix socket with body.
func serveReplies(t *testing.T, body string) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "d.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, body)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return sock
}

// The result decodes straight into out; an RPC error comes back as
// *api.Error; a result of the wrong shape and a broken reply say which.
func TestCallDecodesOnce(t *testing.T) {
	ctx := context.Background()
	var l api.VMList
	sock := serveReplies(t, `{"jsonrpc":"2.0","id":1,"result":{"vms":[{"id":"a1","name":"dev","state":"running"}]}}`)
	if err := New(sock).Call(ctx, api.MethodVMList, nil, &l); err != nil {
		t.Fatal(err)
	}
	if len(l.VMs) != 1 || l.VMs[0].Name != "dev" || l.VMs[0].State != "running" {
		t.Fatalf("decoded %+v", l)
	}
	if err := New(sock).Call(ctx, api.MethodVMList, nil, nil); err != nil {
		t.Fatalf("call with no out: %v", err)
	}

	sock = serveReplies(t, `{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"no vm named \"x\"","data":{"kind":"not_found"}}}`)
	var re *api.Error
	if err := New(sock).Call(ctx, api.MethodVMGet, api.VMRef{Ref: "x"}, &api.VM{}); !errors.As(err, &re) || re.Message != `no vm named "x"` {
		t.Fatalf("rpc error: %v", err)
	}

	sock = serveReplies(t, `{"jsonrpc":"2.0","id":1,"result":{"vms":"not a list"}}`)
	if err := New(sock).Call(ctx, api.MethodVMList, nil, &l); err == nil || !strings.Contains(err.Error(), "decoding vm.list result") {
		t.Fatalf("wrong shape: %v", err)
	}
	sock = serveReplies(t, `{"jsonrpc":"2.0","id":1,"result":{"vms":[`)
	if err := New(sock).Call(ctx, api.MethodVMList, nil, &l); err == nil || !strings.Contains(err.Error(), "reading vm.list reply") {
		t.Fatalf("broken reply: %v", err)
	}
}

// readBody returns exactly what was sent, with the length known, unknown
// (a chunked reply, growing past the first 1 MiB), or declared too small.
func TestReadBody(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", (3<<20)/16+7) // > 1 MiB: grows twice
	for _, tc := range []struct {
		name   string
		body   string
		length int64
	}{
		{"empty", "", 0},
		{"known", "hello", 5},
		{"unknown", "hello", -1},
		{"unknown-big", big, -1},
		{"known-big", big, int64(len(big))},
		{"short-length", big, 10},
	} {
		got, err := readBody(shortReads(strings.NewReader(tc.body)), tc.length)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if string(got) != tc.body {
			t.Fatalf("%s: got %d bytes, want %d", tc.name, len(got), len(tc.body))
		}
	}
}

// shortReads gives short reads (at most 64 KiB each), like a chunked HTTP
// body.
func shortReads(r io.Reader) io.Reader { return &shortReader{r} }

type shortReader struct{ r io.Reader }

func (s *shortReader) Read(p []byte) (int, error) {
	if len(p) > 64<<10 {
		p = p[:64<<10]
	}
	return s.r.Read(p)
}
