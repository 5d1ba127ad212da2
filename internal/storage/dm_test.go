package storage

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func reversed(s []string) []string {
	r := slices.Clone(s)
	slices.Reverse(r)
	return r
}

// checkDown asserts nothing is left on the host, every made handle was
// released in reverse order, and the returned and last recorded states
// agree on "down, no handles".
func checkDown(t *testing.T, fx *dmFixture, st State) {
	t.Helper()
	if live := fx.host.live(); len(live) != 0 {
		t.Errorf("left on host: %v", live)
	}
	if !reflect.DeepEqual(fx.host.released, reversed(fx.host.made)) {
		t.Errorf("released %v, want reverse of made %v", fx.host.released, fx.host.made)
	}
	if st.Phase != PhaseDown || len(st.Handles) != 0 {
		t.Errorf("state %+v, want phase down without handles", st)
	}
	if last := fx.rec.last(); !reflect.DeepEqual(last, st) {
		t.Errorf("last recorded state %+v differs from returned %+v", last, st)
	}
}

func TestDMActivateDeactivate(t *testing.T) {
	fx := newDMFixture(t)
	ctx := context.Background()
	if got := fx.disk.State; got.Phase != PhaseDown || got.COWPath != filepath.Join(fx.disk.VMDir, "cow.img") {
		t.Fatalf("after CreateRoot: %+v", got)
	}
	fi, err := os.Stat(fx.disk.State.COWPath)
	if err != nil || fi.Size() < fx.disk.DiskBytes+fx.disk.DiskBytes/256 {
		t.Fatalf("cow file: %v size %d for a %d-byte disk", err, fi.Size(), fx.disk.DiskBytes)
	}
	for round := 0; round < 2; round++ {
		st, err := fx.m.Activate(ctx, fx.disk)
		if err != nil {
			t.Fatalf("Activate: %v", err)
		}
		if st.Phase != PhaseReady || st.RootDisk != "/dev/mapper/banger-0123abcdef" {
			t.Fatalf("state %+v", st)
		}
		var roles []string
		for _, h := range st.Handles {
			if h.State != StateDone || h.Name == "" {
				t.Errorf("handle not done: %+v", h)
			}
			roles = append(roles, h.Role)
		}
		if want := []string{RoleImage, RoleCOW, RoleOrigin, RoleSnapshot}; !reflect.DeepEqual(roles, want) {
			t.Errorf("roles %v, want %v", roles, want)
		}
		if len(fx.host.live()) != 4 {
			t.Errorf("live %v", fx.host.live())
		}
		fx.disk.State = st
		// Activating a ready VM whose devices exist changes nothing.
		again, err := fx.m.Activate(ctx, fx.disk)
		if err != nil || !reflect.DeepEqual(again, st) {
			t.Errorf("second Activate: %+v, %v", again, err)
		}
		st, err = fx.m.Deactivate(ctx, fx.disk)
		if err != nil {
			t.Fatalf("Deactivate: %v", err)
		}
		checkDown(t, fx, st)
		fx.disk.State = st
		fx.host.made, fx.host.released = nil, nil
	}
	if _, err := os.Stat(fx.disk.State.COWPath); err != nil {
		t.Errorf("cow file must survive stop/start: %v", err)
	}
	if err := fx.m.Remove(ctx, fx.disk); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(fx.disk.State.COWPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cow file after Remove: %v", err)
	}
}

// countRecords runs a full Activate on a fresh fixture and returns how
// many states CreateRoot and Activate wrote.
func countRecords(t *testing.T) (create, activate int) {
	fx := newDMFixture(t)
	create = len(fx.rec.states)
	if _, err := fx.m.Activate(context.Background(), fx.disk); err != nil {
		t.Fatal(err)
	}
	return create, len(fx.rec.states) - create
}

func TestDMActivateFailureAtEveryStep(t *testing.T) {
	steps := []string{"LoopAttach#1", "LoopAttach#2", "DMCreateOrigin#1", "DMCreateSnapshot#1", "DMChown#1", "GrowFS#1"}
	for _, step := range steps {
		t.Run(step, func(t *testing.T) {
			fx := newDMFixture(t)
			fx.host.failOn = []string{step}
			st, err := fx.m.Activate(context.Background(), fx.disk)
			if !errors.Is(err, errInjected) {
				t.Fatalf("Activate error %v, want the injected one", err)
			}
			checkDown(t, fx, st)
			// The failure is not sticky: the next start works.
			fx.disk.State = st
			if st, err = fx.m.Activate(context.Background(), fx.disk); err != nil || st.Phase != PhaseReady {
				t.Fatalf("retry: %+v, %v", st, err)
			}
		})
	}
	create, activate := countRecords(t)
	for i := 1; i <= activate; i++ {
		t.Run("record#"+string(rune('0'+i/10))+string(rune('0'+i%10)), func(t *testing.T) {
			fx := newDMFixture(t)
			fx.rec.failAt = create + i
			st, err := fx.m.Activate(context.Background(), fx.disk)
			if !errors.Is(err, errInjected) {
				t.Fatalf("Activate error %v, want the injected one", err)
			}
			checkDown(t, fx, st)
		})
	}
}

func TestDMRollbackFailureKeepsState(t *testing.T) {
	fx := newDMFixture(t)
	ctx := context.Background()
	fx.host.failOn = []string{"DMChown#1", "DMRemove#1"}
	st, err := fx.m.Activate(ctx, fx.disk)
	if err == nil || !strings.Contains(err.Error(), "rolling back") {
		t.Fatalf("Activate error %v, want a rollback failure", err)
	}
	if st.Phase != PhaseTearingDown || len(st.Handles) != 4 || len(fx.host.live()) != 4 {
		t.Fatalf("state %+v live %v: want all handles kept", st, fx.host.live())
	}
	if last := fx.rec.last(); !reflect.DeepEqual(last, st) {
		t.Errorf("recorded %+v, returned %+v", last, st)
	}
	fx.disk.State = st
	st, err = fx.m.Deactivate(ctx, fx.disk)
	if err != nil {
		t.Fatal(err)
	}
	checkDown(t, fx, st)
}

func TestDMDeactivateBusy(t *testing.T) {
	tests := []struct {
		name    string
		busy    int
		wantErr string
	}{
		{"clears after retries", 3, ""},
		{"never clears", -1, "still busy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fx := newDMFixture(t)
			ctx := context.Background()
			st, err := fx.m.Activate(ctx, fx.disk)
			if err != nil {
				t.Fatal(err)
			}
			fx.disk.State = st
			fx.host.busy["banger-0123abcdef"] = tt.busy
			st, err = fx.m.Deactivate(ctx, fx.disk)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Deactivate: %v", err)
				}
				checkDown(t, fx, st)
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "pid 42 (firecracker)") {
				t.Fatalf("Deactivate error %v, want %q naming the holder", err, tt.wantErr)
			}
			if st.Phase != PhaseTearingDown || len(st.Handles) != 4 || len(fx.host.live()) != 4 {
				t.Fatalf("state %+v live %v: want everything kept for the next try", st, fx.host.live())
			}
			if last := fx.rec.last(); !reflect.DeepEqual(last, st) {
				t.Errorf("recorded %+v, returned %+v", last, st)
			}
			delete(fx.host.busy, "banger-0123abcdef")
			fx.disk.State = st
			st, err = fx.m.Deactivate(ctx, fx.disk)
			if err != nil {
				t.Fatal(err)
			}
			checkDown(t, fx, st)
		})
	}
}

// crashed runs fn and reports whether it "crashed" in the recorder.
func crashed(fn func()) (c bool) {
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(crash); !ok {
				panic(r)
			}
			c = true
		}
	}()
	fn()
	return false
}

func TestDMRecoverAfterCrash(t *testing.T) {
	create, activate := countRecords(t)
	ctx := context.Background()
	for i := 1; i <= activate; i++ {
		t.Run("activate", func(t *testing.T) {
			fx := newDMFixture(t)
			fx.rec.crashAt = create + i
			if !crashed(func() { _, _ = fx.m.Activate(ctx, fx.disk) }) {
				t.Fatal("no crash")
			}
			fx.disk.State = fx.rec.last()
			st, err := fx.m.Recover(ctx, fx.disk)
			if err != nil {
				t.Fatalf("Recover from %+v: %v", fx.disk.State, err)
			}
			checkDown(t, fx, st)
		})
	}
	for i := 1; ; i++ {
		fx := newDMFixture(t)
		st, err := fx.m.Activate(ctx, fx.disk)
		if err != nil {
			t.Fatal(err)
		}
		fx.disk.State = st
		fx.rec.crashAt = len(fx.rec.states) + i
		if !crashed(func() { _, _ = fx.m.Deactivate(ctx, fx.disk) }) {
			break // i went past the last write
		}
		fx.disk.State = fx.rec.last()
		st, err = fx.m.Recover(ctx, fx.disk)
		if err != nil {
			t.Fatalf("Recover from %+v: %v", fx.disk.State, err)
		}
		if fx.disk.State.Phase == PhaseReady {
			// Died before recording the teardown: the devices are intact
			// and stay ready for the daemon to adopt or stop.
			if !reflect.DeepEqual(st, fx.disk.State) || len(fx.host.live()) != 4 {
				t.Errorf("crash #%d: %+v live %v", i, st, fx.host.live())
			}
			continue
		}
		checkDown(t, fx, st)
	}
}

func TestDMRecoverReady(t *testing.T) {
	ctx := context.Background()
	fx := newDMFixture(t)
	st, err := fx.m.Activate(ctx, fx.disk)
	if err != nil {
		t.Fatal(err)
	}
	fx.disk.State = st
	got, err := fx.m.Recover(ctx, fx.disk)
	if err != nil || !reflect.DeepEqual(got, st) || len(fx.host.live()) != 4 {
		t.Fatalf("Recover of a live ready vm: %+v %v, live %v", got, err, fx.host.live())
	}
	// A host reboot: devices gone, and the image's loop number now belongs
	// to someone else's file, which must be left alone.
	fx.host.dms = map[string][]string{}
	fx.host.loops = map[string]string{st.Handles[0].Name: "/somewhere/else.img"}
	got, err = fx.m.Recover(ctx, fx.disk)
	if err != nil {
		t.Fatal(err)
	}
	if got.Phase != PhaseDown || len(got.Handles) != 0 {
		t.Errorf("after reboot: %+v", got)
	}
	if fx.host.loops[st.Handles[0].Name] != "/somewhere/else.img" {
		t.Error("someone else's loop device was detached")
	}
}

func TestCreateRootBadInput(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.ext4")
	writeFakeExt4(t, good, 8<<20)
	junk := filepath.Join(dir, "junk.img")
	if err := os.WriteFile(junk, make([]byte, 8192), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		image string
		size  int64
		want  string
	}{
		{"missing image", filepath.Join(dir, "nope.ext4"), 16 << 20, "does not exist"},
		{"not ext4", junk, 16 << 20, "not an ext4 filesystem"},
		{"disk smaller than image", good, 4 << 20, "smaller than its image"},
		{"odd size", good, 16<<20 + 1, "multiple of 4096"},
	}
	for _, drv := range []string{DriverDM, DriverCopy} {
		for _, tt := range tests {
			t.Run(drv+"/"+tt.name, func(t *testing.T) {
				rec := &recorder{}
				m, err := New(Options{Driver: drv, Host: newFakeHost(t, rec), Record: rec.record})
				if err != nil {
					t.Fatal(err)
				}
				vmDir := t.TempDir()
				_, _, err = m.CreateRoot(context.Background(), Disk{VMID: "abc", VMDir: vmDir, ImagePath: tt.image, DiskBytes: tt.size})
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("error %v, want %q", err, tt.want)
				}
				if ents, _ := os.ReadDir(vmDir); len(ents) != 0 {
					t.Errorf("left in vm dir: %v", ents)
				}
				if len(rec.states) != 0 {
					t.Errorf("recorded %+v before validating", rec.states)
				}
			})
		}
	}
}

func TestNew(t *testing.T) {
	if _, err := New(Options{Driver: "zfs", Host: newFakeHost(t, &recorder{})}); err == nil || !strings.Contains(err.Error(), "unknown storage_driver") {
		t.Errorf("bad driver: %v", err)
	}
	if _, err := New(Options{Driver: "copy"}); err == nil {
		t.Error("no host accepted")
	}
	m, err := New(Options{Driver: "auto", Host: newFakeHost(t, &recorder{})})
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := Detect(); m.Driver() != d {
		t.Errorf("auto resolved to %s, Detect says %s", m.Driver(), d)
	}
}

func TestCOWBytes(t *testing.T) {
	for _, disk := range []int64{1 << 20, 8 << 30, 100 << 30} {
		// one 4 KiB metadata chunk per 256 data chunks, plus the header
		if got, need := cowBytes(disk), disk+disk/256+8192; got < need || got%4096 != 0 {
			t.Errorf("cowBytes(%d) = %d, need >= %d and 4 KiB aligned", disk, got, need)
		}
	}
}
