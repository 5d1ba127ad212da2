package client

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
