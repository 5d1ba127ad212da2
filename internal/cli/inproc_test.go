package cli

import (
	"context"
	"net"
	"os"
	"testing"
	"time"

	"banger/internal/client"
	"banger/internal/config"
	"banger/internal/daemon"
	"banger/internal/hostops"
)

// inProcessDaemon is a bangerd served by this test process.
type inProcessDaemon struct{ done chan error }

func (d *inProcessDaemon) stopped() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// startInProcessDaemon serves a daemon for env (the same state dir and
// socket the CLI under test uses) until the test ends. The privileged seam
// runs in-process, so it needs root.
func startInProcessDaemon(t *testing.T, env map[string]string) *inProcessDaemon {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the in-process daemon runs its privileged operations in-process")
	}
	if env["BANGER_DNS_LISTEN_ADDR"] == "" {
		env["BANGER_DNS_LISTEN_ADDR"] = freeUDPAddr(t) // not the default port another daemon may hold
	}
	getenv := func(k string) string { return env[k] }
	paths, err := config.DefaultPaths(getenv)
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := config.Load(paths, getenv)
	if err != nil {
		t.Fatal(err)
	}
	host := hostops.New(hostops.Options{Roots: []string{paths.StateDir, paths.DataDir}, HelperPath: loaded.Config.HelperPath})
	d, err := daemon.New(context.Background(), daemon.Options{Loaded: loaded, Host: host})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	td := &inProcessDaemon{done: make(chan error, 1)}
	go func() { td.done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-td.done:
		case <-time.After(10 * time.Second):
			t.Error("in-process daemon did not stop")
		}
	})
	cl := client.New(paths.Socket)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := cl.Ping(context.Background()); err == nil {
			return td
		}
		if time.Now().After(deadline) {
			t.Fatal("in-process daemon did not answer")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func freeUDPAddr(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().String()
}
