package storage

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestParseState(t *testing.T) {
	st := State{Driver: DriverDM, RootDisk: "/dev/mapper/banger-x", COWPath: "/v/cow.img", Phase: PhaseReady,
		Handles: []Handle{{Kind: KindLoop, Name: "/dev/loop3", Backing: "/i", Role: RoleImage, State: StateDone}}}
	b, err := st.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseState(b)
	if err != nil || !reflect.DeepEqual(got, st) {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	for _, empty := range []string{"", "{}", "  {}\n"} {
		if got, err := ParseState([]byte(empty)); err != nil || !reflect.DeepEqual(got, State{}) {
			t.Errorf("ParseState(%q) = %+v, %v", empty, got, err)
		}
	}
	for _, bad := range []string{`{"driver":"copy","future":1}`, `{"driver":`, `{} {}`, `[]`} {
		if _, err := ParseState([]byte(bad)); err == nil {
			t.Errorf("ParseState(%q) accepted", bad)
		}
	}
}

// TestRemovePartial: a VM whose create never recorded its root disk, or
// whose files are partly gone, is removed without error and leaves nothing
// CreateRoot could have made (the ".tmp: outside the directory" bug).
func TestRemovePartial(t *testing.T) {
	m, err := New(Options{Driver: DriverCopy, Host: newFakeHost(t, &recorder{})})
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		state func(dir string) State
		files []string
	}{
		"empty state, half-made copy":  {func(string) State { return State{Driver: DriverCopy} }, []string{"rootfs.ext4.tmp"}},
		"empty state, unrecorded root": {func(string) State { return State{Driver: DriverCopy} }, []string{"rootfs.ext4", "cow.img"}},
		"creating": {func(dir string) State {
			return State{Driver: DriverCopy, Phase: PhaseCreating, RootDisk: filepath.Join(dir, "rootfs.ext4")}
		}, []string{"rootfs.ext4.tmp"}},
		"all recorded, root gone": {func(dir string) State {
			return State{Driver: DriverCopy, Phase: PhaseDown, RootDisk: filepath.Join(dir, "rootfs.ext4"), WorkDisk: filepath.Join(dir, "work.ext4")}
		}, []string{"work.ext4", "work.ext4.tmp"}},
		"nothing left at all": {func(dir string) State {
			return State{Driver: DriverDM, Phase: PhaseDown, RootDisk: "/dev/mapper/banger-0123abcdef", COWPath: filepath.Join(dir, "cow.img"), WorkDisk: filepath.Join(dir, "work.ext4")}
		}, nil},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "vm")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			for _, f := range c.files {
				if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			d := Disk{VMID: "0123abcdef", VMDir: dir, State: c.state(dir)}
			if err := m.Remove(context.Background(), d); err != nil {
				t.Fatalf("Remove: %v", err)
			}
			ents, _ := os.ReadDir(dir)
			if len(ents) != 0 {
				t.Fatalf("left in the vm directory: %v", ents)
			}
			// Again, and with the directory itself gone: still fine.
			if err := m.Remove(context.Background(), d); err != nil {
				t.Fatalf("second Remove: %v", err)
			}
			os.Remove(dir)
			if err := m.Remove(context.Background(), d); err != nil {
				t.Fatalf("Remove with the directory gone: %v", err)
			}
		})
	}
	// A recorded path outside the VM directory is still refused, and the
	// files inside are still removed.
	dir := filepath.Join(t.TempDir(), "vm")
	os.Mkdir(dir, 0o700)
	outside := filepath.Join(filepath.Dir(dir), "precious")
	os.WriteFile(outside, []byte("keep"), 0o600)
	os.WriteFile(filepath.Join(dir, "work.ext4"), []byte("x"), 0o600)
	err = m.Remove(context.Background(), Disk{VMID: "0123abcdef", VMDir: dir, State: State{Driver: DriverCopy, RootDisk: outside, WorkDisk: filepath.Join(dir, "work.ext4")}})
	if err == nil || !strings.Contains(err.Error(), "outside the directory") {
		t.Fatalf("outside path: %v", err)
	}
	if _, err := os.Stat(outside); err != nil {
		t.Fatalf("file outside the vm directory removed: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "work.ext4")); !os.IsNotExist(err) {
		t.Fatalf("work disk kept: %v", err)
	}
	if err := m.Remove(context.Background(), Disk{VMID: "0123abcdef", VMDir: "", State: State{}}); err == nil {
		t.Fatal("Remove with no vm directory accepted")
	}
}

// TestRecoverCreatingWithoutRoot: an interrupted create whose state names
// no root disk recovers to the empty state, touching nothing outside.
func TestRecoverCreatingWithoutRoot(t *testing.T) {
	rec := &recorder{}
	m, err := New(Options{Driver: DriverCopy, Host: newFakeHost(t, rec), Record: rec.record})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "vm")
	os.Mkdir(dir, 0o700)
	st, err := m.Recover(context.Background(), Disk{VMID: "0123abcdef", VMDir: dir, State: State{Driver: DriverCopy, Phase: PhaseCreating}})
	if err != nil || st.Phase != "" || st.RootDisk != "" {
		t.Fatalf("Recover: %+v %v", st, err)
	}
}

func TestSeeds(t *testing.T) {
	seeds := t.TempDir()
	m, err := New(Options{Driver: DriverCopy, Host: newFakeHost(t, &recorder{}), SeedDir: seeds})
	if err != nil {
		t.Fatal(err)
	}
	names := []string{
		"aaaa000001-400000-17f0.ext4", "aaaa000001-400000-17f1.ext4", "aaaa000001-400000-17f2.ext4.tmp",
		"bbbb000002-400000-17f0.ext4", "cccc000003-400000-17f0.ext4",
		"aaaa000001.ext4", "notes.txt", // not seeds: kept
	}
	for _, n := range names {
		os.WriteFile(filepath.Join(seeds, n), nil, 0o600)
	}
	os.Mkdir(filepath.Join(seeds, "dddd000004-1-2.ext4"), 0o700) // a directory is never a seed
	left := func() []string {
		ents, _ := os.ReadDir(seeds)
		var out []string
		for _, e := range ents {
			out = append(out, e.Name())
		}
		return out
	}
	n, err := m.RemoveSeeds("aaaa000001")
	if err != nil || n != 3 {
		t.Fatalf("RemoveSeeds = %d, %v; left %v", n, err, left())
	}
	os.WriteFile(filepath.Join(seeds, "bbbb000002-400000-17f1.ext4.tmp"), nil, 0o600) // half-built: pruned though its image lives
	n, err = m.PruneSeeds(func(id string) bool { return id == "bbbb000002" })
	if err != nil || n != 2 {
		t.Fatalf("PruneSeeds = %d, %v; left %v", n, err, left())
	}
	want := []string{"aaaa000001.ext4", "bbbb000002-400000-17f0.ext4", "dddd000004-1-2.ext4", "notes.txt"}
	if got := left(); !slices.Equal(got, want) {
		t.Fatalf("left %v, want %v", got, want)
	}
	if n, err := (&Manager{}).RemoveSeeds("x"); n != 0 || err != nil {
		t.Fatalf("no seed dir: %d %v", n, err)
	}
	os.RemoveAll(seeds)
	if n, err := m.RemoveSeeds("bbbb000002"); n != 0 || err != nil {
		t.Fatalf("missing seed dir: %d %v", n, err)
	}
}
