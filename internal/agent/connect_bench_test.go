package agent

import (
	"context"
	"io"
	"net"
	"path/filepath"
	"testing"

	"banger/internal/forward"
)

// BenchmarkTunnelUpload sends 64 MiB per iteration through forward.Listen
// → DialGuestPort over a unix socket → the agent handler → a TCP sink, all
// in this process (the path of `vm forward` against the fake Firecracker,
// without the process hops). Run: go test -run '^$' -bench TunnelUpload ./internal/agent/
func BenchmarkTunnelUpload(b *testing.B) {
	sink, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	go func() {
		for {
			c, err := sink.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(io.Discard, c)
			}()
		}
	}()
	sock := filepath.Join(b.TempDir(), "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go Serve(ctx, l, Handler(Options{}))
	dial := func() net.Conn {
		c, err := net.Dial("unix", sock)
		if err != nil {
			b.Fatal(err)
		}
		return c
	}
	port := uint16(sink.Addr().(*net.TCPAddr).Port)
	f, err := forward.Listen(context.Background(), "127.0.0.1:0", func(ctx context.Context) (net.Conn, error) {
		return DialGuestPort(ctx, dial(), port)
	}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	const size = 64 << 20
	buf := make([]byte, 256<<10)
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		c, err := net.Dial("tcp", f.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		for sent := 0; sent < size; sent += len(buf) {
			if _, err := c.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		c.(*net.TCPConn).CloseWrite()
		io.Copy(io.Discard, c)
		c.Close()
	}
}
