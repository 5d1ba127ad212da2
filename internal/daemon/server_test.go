package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/client"
	"banger/internal/config"
	"banger/internal/storage"
)

// fakeHost is a stateful stand-in for the privileged seam: it records the
// taps and NAT members it was asked for. Storage ops are not used by these
// tests and come from the embedded (nil) interface.
type fakeHost struct {
	storage.Host
	taps map[string]bool
	nat  map[netip.Addr]bool
}

func newFakeHost() *fakeHost {
	return &fakeHost{taps: map[string]bool{}, nat: map[netip.Addr]bool{}}
}

func (f *fakeHost) Mode() string { return "fake" }
func (f *fakeHost) EnsureStateDirs(_ context.Context, dirs ...string) error {
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	return nil
}
func (f *fakeHost) EnsureBridge(context.Context, string, netip.Addr, netip.Prefix) (bool, error) {
	return false, nil
}
func (f *fakeHost) CreateTap(_ context.Context, name, _ string) error {
	f.taps[name] = true
	return nil
}
func (f *fakeHost) DeleteTap(_ context.Context, name string) error { delete(f.taps, name); return nil }
func (f *fakeHost) RenameTap(_ context.Context, from, to string) error {
	delete(f.taps, from)
	f.taps[to] = true
	return nil
}
func (f *fakeHost) NATEnsure(context.Context, string, netip.Prefix) (bool, error) {
	return false, nil
}
func (f *fakeHost) NATAdd(_ context.Context, a netip.Addr) error    { f.nat[a] = true; return nil }
func (f *fakeHost) NATRemove(_ context.Context, a netip.Addr) error { delete(f.nat, a); return nil }

type testDaemon struct {
	d      *Daemon
	paths  config.Paths
	cl     *client.Client
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

func testEnv(t testing.TB) func(string) string {
	dir, err := os.MkdirTemp("/tmp", "bgd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	port := freeUDPPort(t)
	env := map[string]string{
		"HOME":                   dir,
		"BANGER_STATE_DIR":       filepath.Join(dir, "s"),
		"XDG_RUNTIME_DIR":        filepath.Join(dir, "r"),
		"BANGER_CONFIG":          filepath.Join(dir, "none.toml"),
		"BANGER_DNS_LISTEN_ADDR": fmt.Sprintf("127.0.0.1:%d", port),
	}
	return func(k string) string { return env[k] }
}

func freeUDPPort(t testing.TB) int {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().(*net.UDPAddr).Port
}

func startTestDaemon(t *testing.T, getenv func(string) string) *testDaemon {
	t.Helper()
	paths, err := config.DefaultPaths(getenv)
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := config.Load(paths, getenv)
	if err != nil {
		t.Fatal(err)
	}
	return runTestDaemon(t, loaded, newFakeHost())
}

// runTestDaemon serves a daemon in-process until the test ends and waits
// until it answers.
func runTestDaemon(t testing.TB, loaded *config.Loaded, host Host) *testDaemon {
	t.Helper()
	d, err := New(context.Background(), Options{Loaded: loaded, Host: host})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	td := &testDaemon{d: d, paths: loaded.Paths, cl: client.New(loaded.Paths.Socket), cancel: cancel, done: make(chan error, 1)}
	go func() { td.done <- d.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := td.cl.Ping(context.Background()); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("daemon did not answer")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Cleanup(td.stop)
	return td
}

func (td *testDaemon) stop() {
	td.once.Do(func() {
		td.cancel()
		select {
		case <-td.done:
		case <-time.After(10 * time.Second):
		}
	})
}

func rawPost(t *testing.T, socket string, body []byte) api.Response {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", socket)
	}}}
	resp, err := hc.Post("http://bangerd/rpc", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r api.Response
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("reply %q: %v", b, err)
	}
	return r
}

func TestRPCBadInput(t *testing.T) {
	td := startTestDaemon(t, testEnv(t))
	big := append([]byte(`{"jsonrpc":"2.0","id":1,"method":"vm.list","params":{"x":"`), bytes.Repeat([]byte("a"), api.MaxRequestBytes+10)...)
	big = append(big, []byte(`"}}`)...)
	tests := []struct {
		name string
		body []byte
		code int
		msg  string
	}{
		{"malformed json", []byte(`{"jsonrpc":`), api.CodeParse, "malformed"},
		{"not json-rpc 2.0", []byte(`{"jsonrpc":"1.0","id":1,"method":"vm.list"}`), api.CodeInvalidRequest, "2.0"},
		{"unknown method", []byte(`{"jsonrpc":"2.0","id":1,"method":"vm.explode"}`), api.CodeMethodNotFound, "vm.explode"},
		{"wrong param type", []byte(`{"jsonrpc":"2.0","id":1,"method":"vm.get","params":{"ref":5}}`), api.CodeInvalidParams, "vm.get"},
		{"unknown param", []byte(`{"jsonrpc":"2.0","id":1,"method":"vm.get","params":{"reff":"x"}}`), api.CodeInvalidParams, "reff"},
		{"zero vcpu", []byte(`{"jsonrpc":"2.0","id":1,"method":"vm.create","params":{"name":"a","vcpu":0}}`), api.CodeApplication, "vcpu 0"},
		{"bad name", []byte(`{"jsonrpc":"2.0","id":1,"method":"vm.create","params":{"name":"Bad_Name"}}`), api.CodeApplication, "DNS label"},
		{"body over limit", big, api.CodeInvalidRequest, "limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := rawPost(t, td.paths.Socket, tt.body)
			if r.Error == nil || r.Error.Code != tt.code || !strings.Contains(r.Error.Message, tt.msg) {
				t.Fatalf("got %+v, want code %d containing %q", r.Error, tt.code, tt.msg)
			}
			if _, err := td.cl.Ping(context.Background()); err != nil {
				t.Fatalf("daemon stopped serving after %s: %v", tt.name, err)
			}
		})
	}
	// Validation rejects before anything is persisted.
	var l api.VMList
	if err := td.cl.Call(context.Background(), api.MethodVMList, nil, &l); err != nil || len(l.VMs) != 0 {
		t.Fatalf("vms after rejected creates: %v %v", l.VMs, err)
	}
}

func TestCheckPeer(t *testing.T) {
	if err := checkPeer(1000, 1000); err != nil {
		t.Fatal(err)
	}
	if err := checkPeer(0, 1000); err != nil {
		t.Fatal("root must be allowed:", err)
	}
	if err := checkPeer(1001, 1000); err == nil || !strings.Contains(err.Error(), "1001") {
		t.Fatalf("other uid: %v", err)
	}
}

// TestSocketModeAndStaleSocket: a stale socket file is replaced, the socket
// is 0600, a second daemon is refused, and shutdown removes the socket.
func TestSocketModeAndStaleSocket(t *testing.T) {
	getenv := testEnv(t)
	paths, _ := config.DefaultPaths(getenv)
	// A stale socket file left by a dead daemon.
	if err := os.MkdirAll(filepath.Dir(paths.Socket), 0o700); err != nil {
		t.Fatal(err)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: paths.Socket, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	if _, err := os.Stat(paths.Socket); err != nil {
		t.Fatalf("stale socket not left: %v", err)
	}
	td := startTestDaemon(t, getenv)
	fi, err := os.Stat(paths.Socket)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v %v, want 0600", fi.Mode().Perm(), err)
	}
	// A second daemon is refused while the first runs.
	loaded, _ := config.Load(paths, getenv)
	_, err = New(context.Background(), Options{Loaded: loaded, Host: newFakeHost()})
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "already running") {
		t.Fatalf("second daemon: %v", err)
	}
	st, err := td.cl.Ping(context.Background())
	if err != nil || st.PID != os.Getpid() || st.Socket != paths.Socket {
		t.Fatalf("status %+v %v", st, err)
	}
	td.stop()
	if _, err := os.Stat(paths.Socket); !os.IsNotExist(err) {
		t.Fatalf("socket left after graceful shutdown: %v", err)
	}
}
