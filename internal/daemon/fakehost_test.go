package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/client"
	"banger/internal/config"
	"banger/internal/store"
)

// hostFake is a stateful, concurrency-safe fake of the whole privileged
// seam: taps, NAT members, loop and dm devices live in maps, and a test
// can make DeleteTap block to hold an operation in the middle of its host
// work.
type hostFake struct {
	mu       sync.Mutex
	taps     map[string]bool
	nat      map[netip.Addr]bool
	loops    map[string]string // dev -> backing
	dms      map[string]bool
	calls    map[string]int
	block    chan struct{} // non-nil: DeleteTap waits until it is closed
	inflight int           // DeleteTaps waiting on block
	peak     int           // most DeleteTaps waiting at once

	natDelay    time.Duration // each NAT change takes this long
	natInflight int           // NAT changes under way
	natPeak     int           // most NAT changes under way at once
}

func newHostFake() *hostFake {
	return &hostFake{taps: map[string]bool{}, nat: map[netip.Addr]bool{}, loops: map[string]string{}, dms: map[string]bool{}, calls: map[string]int{}}
}

func (f *hostFake) call(name string) {
	f.mu.Lock()
	f.calls[name]++
	f.mu.Unlock()
}

func (f *hostFake) count(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[name]
}

func (f *hostFake) Mode() string { return "fake" }
func (f *hostFake) EnsureStateDirs(_ context.Context, dirs ...string) error {
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	return nil
}
func (f *hostFake) EnsureBridge(context.Context, string, netip.Addr, netip.Prefix) (bool, error) {
	return false, nil
}
func (f *hostFake) CreateTap(_ context.Context, name, _ string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["CreateTap"]++
	f.taps[name] = true
	return nil
}
func (f *hostFake) DeleteTap(ctx context.Context, name string) error {
	f.mu.Lock()
	f.calls["DeleteTap"]++
	block := f.block
	if block != nil {
		f.inflight++
		f.peak = max(f.peak, f.inflight)
	}
	f.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
		}
		f.mu.Lock()
		f.inflight--
		f.mu.Unlock()
	}
	f.mu.Lock()
	delete(f.taps, name)
	f.mu.Unlock()
	return nil
}
func (f *hostFake) RenameTap(_ context.Context, from, to string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.taps, from)
	f.taps[to] = true
	return nil
}
func (f *hostFake) NATEnsure(context.Context, string, netip.Prefix) (bool, error) { return false, nil }
func (f *hostFake) NATAdd(_ context.Context, a netip.Addr) error {
	f.natChange(func() { f.nat[a] = true })
	return nil
}
func (f *hostFake) NATRemove(_ context.Context, a netip.Addr) error {
	f.natChange(func() { delete(f.nat, a) })
	return nil
}

// natChange applies fn under the lock after natDelay, counting how many
// changes are under way at once (a slow netlink call stands in for every
// blocking system call an operation makes).
func (f *hostFake) natChange(fn func()) {
	f.mu.Lock()
	f.natInflight++
	f.natPeak = max(f.natPeak, f.natInflight)
	delay := f.natDelay
	f.mu.Unlock()
	time.Sleep(delay)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.natInflight--
	fn()
}

// Storage ops.
func (f *hostFake) LoopAttach(_ context.Context, path string, _ bool) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	dev := fmt.Sprintf("/dev/loop%d", 100+len(f.loops))
	f.loops[dev] = path
	return dev, nil
}
func (f *hostFake) LoopDetach(_ context.Context, dev, _ string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["LoopDetach"]++
	delete(f.loops, dev)
	return nil
}
func (f *hostFake) LoopBacking(_ context.Context, dev string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.loops[dev], nil
}
func (f *hostFake) LoopsBackedBy(_ context.Context, path string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for dev, b := range f.loops {
		if b == path {
			out = append(out, dev)
		}
	}
	return out, nil
}
func (f *hostFake) DMCreateOrigin(_ context.Context, name, _, _ string, _ int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dms[name] = true
	return nil
}
func (f *hostFake) DMCreateSnapshot(_ context.Context, name, _, _, _ string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dms[name] = true
	return nil
}
func (f *hostFake) DMRemove(_ context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["DMRemove"]++
	delete(f.dms, name)
	return nil
}
func (f *hostFake) DMExists(_ context.Context, name string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.dms[name], nil
}
func (f *hostFake) DMChown(_ context.Context, name string) (string, error) {
	return "/dev/mapper/" + name, nil
}
func (f *hostFake) GrowFS(context.Context, string) (bool, error) { f.call("GrowFS"); return true, nil }
func (f *hostFake) SeedWorkDisk(_ context.Context, _, out string) error {
	f.call("SeedWorkDisk")
	return writeFakeExt4(out, 1<<20)
}
func (f *hostFake) RepairNestedRoot(context.Context, string) ([]string, error) { return nil, nil }

func (f *hostFake) liveTaps() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for t := range f.taps {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

func (f *hostFake) natCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.nat)
}

// writeFakeExt4 writes a file of size bytes carrying a minimal ext4
// superblock (magic, block count, 4 KiB blocks).
func writeFakeExt4(path string, size int64) error {
	// A real (tiny) ext4 with an init: image register checks the superblock
	// and looks for /sbin/init with debugfs.
	tree, err := os.MkdirTemp("", "bgi-tree-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tree)
	for dir, file := range map[string]string{"sbin": "init", "root": ".bashrc"} {
		if err := os.MkdirAll(filepath.Join(tree, dir), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(tree, dir, file), []byte("#!/bin/sh\n"), 0o755); err != nil {
			return err
		}
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", tree, path, fmt.Sprintf("%dk", size>>10)).CombinedOutput(); err != nil {
		return fmt.Errorf("mkfs.ext4 %s: %v: %s", path, err, out)
	}
	return nil
}

// rig is one daemon state directory with a registered image, on a fake
// host; start runs a daemon on it (again after stop, like a restart).
type rig struct {
	t      *testing.T
	dir    string
	env    map[string]string
	loaded *config.Loaded
	host   *hostFake
	d      *Daemon
	cl     *client.Client
	stopFn func()
}

func newRig(t *testing.T, extra map[string]string) *rig {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "bgi-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	fc := filepath.Join(dir, "fc")
	// A stand-in Firecracker that never serves its API: enough for starts
	// that must fail before or just after the launch.
	if err := os.WriteFile(fc, []byte("#!/bin/sh\n[ \"$1\" = --version ] && { echo 'Firecracker v1.16.1'; exit 0; }\nsleep 30\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	kernel := filepath.Join(dir, "vmlinux")
	os.WriteFile(kernel, []byte("k"), 0o644)
	env := map[string]string{
		"HOME":                           dir,
		"BANGER_STATE_DIR":               filepath.Join(dir, "s"),
		"XDG_RUNTIME_DIR":                filepath.Join(dir, "r"),
		"BANGER_CONFIG":                  filepath.Join(dir, "none.toml"),
		"BANGER_DNS_LISTEN_ADDR":         fmt.Sprintf("127.0.0.1:%d", freeUDPPort(t)),
		"BANGER_STORAGE_DRIVER":          "copy",
		"BANGER_DEFAULT_DISK_SIZE":       "8M",
		"BANGER_DEFAULT_WORK_DISK_SIZE":  "4M",
		"BANGER_DEFAULT_MEMORY_MIB":      "128",
		"BANGER_RECONCILE_INTERVAL":      "1h",
		"BANGER_STATS_POLL_INTERVAL":     "1h",
		"BANGER_STOP_GRACE":              "1s",
		"BANGER_FIRECRACKER_BIN":         fc,
		"BANGER_KERNEL_PATH":             kernel,
		"BANGER_VSOCK_AGENT_PATH":        fc,
		"BANGER_IGNORE_PREFLIGHT_ERRORS": "kvm,firecracker,kernel,agent,tun",
	}
	for k, v := range extra {
		env[k] = v
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
	r := &rig{t: t, dir: dir, env: env, loaded: loaded, host: newHostFake()}
	t.Cleanup(r.stop)
	return r
}

func (r *rig) paths() config.Paths { return r.loaded.Paths }

// start runs a daemon and waits until it answers and its start-up
// reconcile is done.
func (r *rig) start() {
	r.t.Helper()
	r.startServing()
	select {
	case <-r.d.reconciled:
	case <-time.After(30 * time.Second):
		r.t.Fatal("start-up reconcile did not finish")
	}
}

// startServing runs a daemon and waits only until it answers.
func (r *rig) startServing() {
	r.t.Helper()
	var log *slog.Logger
	if os.Getenv("BANGER_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	d, err := New(context.Background(), Options{Loaded: r.loaded, Host: r.host, Logger: log})
	if err != nil {
		r.t.Fatal(err)
	}
	d.checkTap = func(string, string) error { return nil }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	r.d, r.cl = d, client.New(r.paths().Socket)
	var once sync.Once
	r.stopFn = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				r.t.Error("daemon did not stop")
			}
		})
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := r.cl.Ping(context.Background()); err == nil {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatal("daemon did not answer")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (r *rig) stop() {
	if r.stopFn != nil {
		r.stopFn()
		r.stopFn = nil
	}
}

func (r *rig) call(method string, params, out any) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return r.cl.Call(ctx, method, params, out)
}

func (r *rig) mustCall(method string, params, out any) {
	r.t.Helper()
	if err := r.call(method, params, out); err != nil {
		r.t.Fatalf("%s %+v: %v", method, params, err)
	}
}

// registerImage registers a small fake ext4 image named "debian".
func (r *rig) registerImage() api.Image {
	r.t.Helper()
	src := filepath.Join(r.dir, "img.ext4")
	if err := writeFakeExt4(src, 4<<20); err != nil {
		r.t.Fatal(err)
	}
	var img api.Image
	r.mustCall(api.MethodImageRegister, api.ImageRegisterParams{Name: "debian", RootfsPath: src}, &img)
	return img
}

func (r *rig) create(name string) api.VM {
	r.t.Helper()
	var res api.VMResult
	r.mustCall(api.MethodVMCreate, api.VMCreateParams{Name: name, NoStart: true}, &res)
	return res.VM
}

// openStore opens the rig's store while no daemon runs.
func (r *rig) openStore() *store.Store {
	r.t.Helper()
	st, err := store.Open(context.Background(), r.paths().DBFile)
	if err != nil {
		r.t.Fatal(err)
	}
	return st
}

// intents lists the recorded intents (through the running daemon's store).
func (r *rig) intents() []store.Intent {
	r.t.Helper()
	ins, err := r.d.store.ListIntents(context.Background())
	if err != nil {
		r.t.Fatal(err)
	}
	return ins
}

// vmDirs lists the directories under vms/.
func (r *rig) vmDirs() []string {
	ents, err := os.ReadDir(r.paths().VMsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		r.t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func (r *rig) vms() []api.VM {
	r.t.Helper()
	var l api.VMList
	r.mustCall(api.MethodVMList, nil, &l)
	return l.VMs
}
