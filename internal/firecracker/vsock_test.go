package firecracker

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeMuxer plays Firecracker's side of hybrid vsock: it reads one CONNECT
// line and answers according to mode.
//
//	"ok":     OK 1073741824, a greeting in the same write, then echo
//	"refuse": close without reply (nothing listens in the guest)
//	"silent": never answer
//	"junk":   answer something that is not OK
func fakeMuxer(t *testing.T, mode string, port string) string {
	t.Helper()
	sock := filepath.Join(shortDir(t), "v.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				br := bufio.NewReader(c)
				line, err := br.ReadString('\n')
				if err != nil {
					return
				}
				if mode == "refuse" || !strings.EqualFold(strings.TrimSpace(line), "CONNECT "+port) {
					return
				}
				switch mode {
				case "silent":
					time.Sleep(5 * time.Second)
				case "junk":
					io.WriteString(c, "HELLO\n")
				case "ok":
					io.WriteString(c, "OK 1073741824\nhello from guest\n")
					io.Copy(c, br)
				}
			}(c)
		}
	}()
	return sock
}

func TestDialVsock(t *testing.T) {
	sock := fakeMuxer(t, "ok", "52")
	conn, err := DialVsock(t.Context(), sock, 52)
	if err != nil {
		t.Fatalf("DialVsock: %v", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	// The greeting sent in the same segment as OK must not be swallowed.
	br := bufio.NewReader(conn)
	greet, err := br.ReadString('\n')
	if err != nil || greet != "hello from guest\n" {
		t.Fatalf("greeting %q, %v", greet, err)
	}
	io.WriteString(conn, "ping\n")
	if echo, err := br.ReadString('\n'); err != nil || echo != "ping\n" {
		t.Errorf("echo %q, %v", echo, err)
	}
}

func TestDialVsockErrors(t *testing.T) {
	dir := shortDir(t)
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close() // the file stays, nothing listens: a dead Firecracker

	tests := []struct {
		name    string
		sock    string
		port    uint32
		timeout time.Duration
		wantIs  []error
		wantMsg string
	}{
		{"missing socket", filepath.Join(dir, "none.sock"), 52, 0, []error{ErrVsockNoSocket}, "none.sock"},
		{"stale socket", stale, 52, 0, []error{ErrVsockNoSocket}, "stale.sock"},
		{"refused", fakeMuxer(t, "refuse", "52"), 52, 0, []error{ErrVsockRefused}, "nothing listens on port 52"},
		{"wrong port", fakeMuxer(t, "ok", "52"), 53, 0, []error{ErrVsockRefused}, "port 53"},
		{"timeout", fakeMuxer(t, "silent", "52"), 52, 100 * time.Millisecond, []error{ErrVsockTimeout, context.DeadlineExceeded}, "timed out"},
		{"junk reply", fakeMuxer(t, "junk", "52"), 52, 0, nil, `unexpected reply "HELLO"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			if tt.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.timeout)
				defer cancel()
			}
			start := time.Now()
			conn, err := DialVsock(ctx, tt.sock, tt.port)
			if err == nil {
				conn.Close()
				t.Fatal("no error")
			}
			for _, want := range tt.wantIs {
				if !errors.Is(err, want) {
					t.Errorf("error %v is not %v", err, want)
				}
			}
			mustContain(t, err.Error(), tt.wantMsg)
			if took := time.Since(start); took > 3*time.Second {
				t.Errorf("took %s", took)
			}
		})
	}
}

func TestDialVsockCancel(t *testing.T) {
	sock := fakeMuxer(t, "silent", "52")
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	_, err := DialVsock(ctx, sock, 52)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	if errors.Is(err, ErrVsockTimeout) {
		t.Error("a cancellation reported as a timeout")
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("cancel noticed after %s", took)
	}
	_ = os.Remove(sock)
}
