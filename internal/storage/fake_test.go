package storage

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"banger/internal/hostops"
)

var errInjected = errors.New("injected failure")

// fakeHost is a stateful fake of the privileged seam: loop devices and dm
// devices exist in maps, stacked devices hold what they sit on, and every
// creation checks that the recorder already holds an intended handle for
// it (state written before the host step).
type fakeHost struct {
	t        *testing.T
	mu       sync.Mutex
	rec      *recorder
	loops    map[string]string // dev -> backing
	dms      map[string][]string
	next     int
	failOn   []string       // "Method#n": the n-th call of Method fails
	counts   map[string]int // calls per method
	busy     map[string]int // dm name -> remaining busy answers (-1: forever)
	made     []string       // "loop /dev/loopN", "dm name" in creation order
	released []string
	seeds    int
}

func newFakeHost(t *testing.T, rec *recorder) *fakeHost {
	return &fakeHost{t: t, rec: rec, loops: map[string]string{}, dms: map[string][]string{}, counts: map[string]int{}, busy: map[string]int{}}
}

func (f *fakeHost) step(method string) error {
	f.counts[method]++
	if slices.Contains(f.failOn, fmt.Sprintf("%s#%d", method, f.counts[method])) {
		return fmt.Errorf("%s: %w", method, errInjected)
	}
	return nil
}

// intended asserts the last recorded state holds an intended handle.
func (f *fakeHost) intended(kind, name, backing string) {
	st := f.rec.last()
	for _, h := range st.Handles {
		if h.Kind == kind && h.State == StateIntended && h.Name == name && h.Backing == backing {
			return
		}
	}
	f.t.Errorf("%s %s%s created before an intended handle was recorded (last state %+v)", kind, name, backing, st)
}

func (f *fakeHost) heldBy(dev string) string {
	for name, deps := range f.dms {
		if slices.Contains(deps, dev) {
			return name
		}
	}
	return ""
}

func (f *fakeHost) LoopAttach(ctx context.Context, path string, ro bool) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.step("LoopAttach"); err != nil {
		return "", err
	}
	f.intended(KindLoop, "", path)
	dev := fmt.Sprintf("/dev/loop%d", f.next)
	f.next++
	f.loops[dev] = path
	f.made = append(f.made, "loop "+dev)
	return dev, nil
}

func (f *fakeHost) LoopDetach(ctx context.Context, dev, backing string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.step("LoopDetach"); err != nil {
		return err
	}
	b, ok := f.loops[dev]
	if !ok {
		return nil
	}
	if b != backing {
		return fmt.Errorf("%w: %s backed by %s", hostops.ErrRefused, dev, b)
	}
	if h := f.heldBy(dev); h != "" {
		f.t.Errorf("loop %s detached while dm %s still holds it", dev, h)
	}
	delete(f.loops, dev)
	f.released = append(f.released, "loop "+dev)
	return nil
}

func (f *fakeHost) LoopBacking(ctx context.Context, dev string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.loops[dev], nil
}

func (f *fakeHost) LoopsBackedBy(ctx context.Context, path string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for dev, b := range f.loops {
		if b == path && f.heldBy(dev) == "" {
			out = append(out, dev)
		}
	}
	return out, nil
}

func (f *fakeHost) createDM(method, name string, check func() error, deps ...string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.step(method); err != nil {
		return err
	}
	if err := check(); err != nil {
		return err
	}
	f.intended(KindDM, name, "")
	if _, ok := f.dms[name]; ok {
		return fmt.Errorf("dm %s exists", name)
	}
	for _, d := range deps {
		if _, ok := f.loops[d]; !ok && !strings.HasPrefix(d, "banger-") {
			return fmt.Errorf("dm %s: no device %s", name, d)
		}
	}
	f.dms[name] = deps
	f.made = append(f.made, "dm "+name)
	return nil
}

func (f *fakeHost) DMCreateOrigin(ctx context.Context, name, loop, backing string, size int64) error {
	return f.createDM("DMCreateOrigin", name, func() error {
		if f.loops[loop] != backing {
			return fmt.Errorf("origin over %s: not backed by %s", loop, backing)
		}
		return nil
	}, loop)
}

func (f *fakeHost) DMCreateSnapshot(ctx context.Context, name, origin, cowLoop, cowBacking string) error {
	return f.createDM("DMCreateSnapshot", name, func() error {
		if f.loops[cowLoop] != cowBacking {
			return fmt.Errorf("snapshot over %s: not backed by %s", cowLoop, cowBacking)
		}
		return nil
	}, origin, cowLoop)
}

func (f *fakeHost) DMRemove(ctx context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.step("DMRemove"); err != nil {
		return err
	}
	if _, ok := f.dms[name]; !ok {
		return nil
	}
	if h := f.heldBy(name); h != "" {
		return &hostops.BusyError{Device: name, Holders: []string{"dm " + h}}
	}
	if n := f.busy[name]; n != 0 {
		f.busy[name] = n - 1
		if n < 0 {
			f.busy[name] = -1
		}
		return &hostops.BusyError{Device: name, Holders: []string{"pid 42 (firecracker)"}}
	}
	delete(f.dms, name)
	f.released = append(f.released, "dm "+name)
	return nil
}

func (f *fakeHost) DMExists(ctx context.Context, name string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.dms[name]
	return ok, nil
}

func (f *fakeHost) DMChown(ctx context.Context, name string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.step("DMChown"); err != nil {
		return "", err
	}
	return "/dev/mapper/" + name, nil
}

func (f *fakeHost) GrowFS(ctx context.Context, path string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.step("GrowFS"); err != nil {
		return false, err
	}
	return true, nil
}

func (f *fakeHost) SeedWorkDisk(ctx context.Context, image, out string) error {
	return errors.New("fake host does not seed")
}

// live lists what exists on the fake host.
func (f *fakeHost) live() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for d := range f.loops {
		out = append(out, "loop "+d)
	}
	for n := range f.dms {
		out = append(out, "dm "+n)
	}
	slices.Sort(out)
	return out
}

// recorder is the Record callback: it keeps every state written and can
// fail or "crash" (panic) at the n-th write.
type recorder struct {
	mu      sync.Mutex
	states  []State
	failAt  int
	crashAt int
}

type crash struct{}

func (r *recorder) record(ctx context.Context, vmID string, st State) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := len(r.states) + 1
	if n == r.crashAt {
		r.crashAt = 0
		panic(crash{})
	}
	if n == r.failAt {
		r.failAt = 0
		return errInjected
	}
	st.Handles = slices.Clone(st.Handles)
	r.states = append(r.states, st)
	return nil
}

func (r *recorder) last() State {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.states) == 0 {
		return State{}
	}
	return r.states[len(r.states)-1]
}

// writeFakeExt4 writes a file of size bytes carrying a minimal ext4
// superblock (magic, block count, 4 KiB blocks).
func writeFakeExt4(t *testing.T, path string, size int64) {
	t.Helper()
	sb := make([]byte, 1024)
	binary.LittleEndian.PutUint32(sb[4:], uint32(size/4096))
	binary.LittleEndian.PutUint32(sb[24:], 2)
	binary.LittleEndian.PutUint16(sb[56:], 0xEF53)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(sb, 1024); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
}

// dmFixture is a VM with a created dm root disk on a fake host.
type dmFixture struct {
	m    *Manager
	host *fakeHost
	rec  *recorder
	disk Disk
}

func newDMFixture(t *testing.T) *dmFixture {
	t.Helper()
	dir := t.TempDir()
	img := filepath.Join(dir, "image.ext4")
	writeFakeExt4(t, img, 4<<20)
	vmDir := filepath.Join(dir, "vm")
	if err := os.Mkdir(vmDir, 0o700); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	host := newFakeHost(t, rec)
	m, err := New(Options{Driver: DriverDM, Host: host, Record: rec.record, BusyTimeout: 300e6})
	if err != nil {
		t.Fatal(err)
	}
	d := Disk{VMID: "0123abcdef", VMDir: vmDir, ImagePath: img, DiskBytes: 8 << 20}
	st, _, err := m.CreateRoot(context.Background(), d)
	if err != nil {
		t.Fatalf("CreateRoot: %v", err)
	}
	d.State = st
	return &dmFixture{m: m, host: host, rec: rec, disk: d}
}
