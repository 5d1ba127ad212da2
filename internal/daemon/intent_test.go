package daemon

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/storage"
	"banger/internal/store"
)

// plantVM records a VM as an operation killed at some point would have
// left it: the row (with storage state st) and the intents ops, and files
// under its directory (nil: no directory at all). It returns the VM.
func (r *rig) plantVM(name, state string, st storage.State, ops []string, files []string) store.VM {
	r.t.Helper()
	ctx := context.Background()
	s := r.openStore()
	defer s.Close()
	img, err := s.GetImageByName(ctx, "debian")
	if err != nil {
		r.t.Fatal(err)
	}
	id := store.NewID()
	dir := filepath.Join(r.paths().VMsDir, id)
	for i := range st.Handles {
		st.Handles[i].Backing = strings.ReplaceAll(st.Handles[i].Backing, "$DIR", dir)
	}
	st.RootDisk = strings.ReplaceAll(st.RootDisk, "$DIR", dir)
	st.WorkDisk = strings.ReplaceAll(st.WorkDisk, "$DIR", dir)
	st.COWPath = strings.ReplaceAll(st.COWPath, "$DIR", dir)
	b, err := st.Encode()
	if err != nil {
		r.t.Fatal(err)
	}
	vm := store.VM{ID: id, Name: name, ImageID: img.ID, State: state, VCPU: 1, MemoryMiB: 128,
		DiskBytes: 8 << 20, WorkDiskBytes: 4 << 20, NAT: true, Dir: dir, Storage: b}
	alloc := func(u store.Used) (store.Allocation, error) {
		d := &Daemon{cfg: r.loaded.Config}
		return d.alloc(u)
	}
	if err := s.Write(ctx, func(tx *store.Tx) error {
		if err := tx.CreateVM(&vm, alloc); err != nil {
			return err
		}
		for _, op := range ops {
			if err := tx.BeginIntent(&store.Intent{VMID: id, Op: op}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		r.t.Fatal(err)
	}
	if files != nil {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			r.t.Fatal(err)
		}
		for _, f := range files {
			if err := writeFakeExt4(filepath.Join(dir, f), 4<<20); err != nil {
				r.t.Fatal(err)
			}
		}
	}
	return vm
}

// checkGone asserts the VM has no row, no intent and no directory.
func (r *rig) checkGone(name string) {
	r.t.Helper()
	for _, v := range r.vms() {
		if v.Name == name {
			r.t.Fatalf("vm %s still listed: %+v", name, v)
		}
	}
	if ins := r.intents(); len(ins) != 0 {
		r.t.Fatalf("intents left: %+v", ins)
	}
	if dirs := r.vmDirs(); len(dirs) != 0 {
		r.t.Fatalf("vm directories left: %v", dirs)
	}
}

// TestInterruptedCreateIsUndone: whatever point a create was killed at,
// the next daemon removes the VM, its disks and its directory, and the
// name can be used again.
func TestInterruptedCreateIsUndone(t *testing.T) {
	copyRoot := storage.State{Driver: storage.DriverCopy, Phase: storage.PhaseCreating, RootDisk: "$DIR/rootfs.ext4"}
	made := storage.State{Driver: storage.DriverCopy, Phase: storage.PhaseDown, RootDisk: "$DIR/rootfs.ext4"}
	cases := map[string]struct {
		st    storage.State
		files []string
	}{
		"row and intent only":    {storage.State{}, nil},
		"empty directory":        {storage.State{}, []string{}},
		"root copy half-made":    {copyRoot, []string{"rootfs.ext4.tmp"}},
		"root made, work half":   {made, []string{"rootfs.ext4", "work.ext4.tmp"}},
		"disks made, end unsaid": {made, []string{"rootfs.ext4", "work.ext4"}},
		"dm cow made":            {storage.State{Driver: storage.DriverDM, Phase: storage.PhaseDown, COWPath: "", RootDisk: "/dev/mapper/banger-x"}, []string{"cow.img"}},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			r := newRig(t, nil)
			r.start()
			r.registerImage()
			r.stop()
			r.plantVM("k3", api.StateCreated, c.st, []string{opCreate}, c.files)
			r.start()
			r.checkGone("k3")
			// The name is free again, and the new VM works.
			r.create("k3")
			r.mustCall(api.MethodVMDelete, api.VMRef{Ref: "k3"}, nil)
			r.checkGone("k3")
			var ok map[string]string
			r.mustCall(api.MethodImageDelete, api.ImageRef{Name: "debian"}, &ok)
		})
	}
}

// TestLegacyUnfinishedCreate: a VM an older build left with storage
// {"driver":"copy"} and no intent (issue 11's k3) is undone at start-up; a
// VM with the same empty storage that was started once is kept, start
// says why it cannot, and delete succeeds.
func TestLegacyUnfinishedCreate(t *testing.T) {
	r := newRig(t, nil)
	r.start()
	r.registerImage()
	r.stop()
	r.plantVM("k3", api.StateCreated, storage.State{Driver: storage.DriverCopy}, nil, []string{"rootfs.ext4.tmp"})
	ran := r.plantVM("ran", api.StateStopped, storage.State{Driver: storage.DriverCopy}, nil, []string{"work.ext4"})
	s := r.openStore()
	ran.StartedAt = time.Now()
	if err := s.UpdateVM(context.Background(), &ran); err != nil {
		t.Fatal(err)
	}
	s.Close()
	r.start()
	if vms := r.vms(); len(vms) != 1 || vms[0].Name != "ran" {
		t.Fatalf("vms after start-up: %+v", vms)
	}
	if err := r.call(api.MethodVMStart, api.VMRef{Ref: "ran"}, nil); err == nil || !strings.Contains(err.Error(), "no root disk") {
		t.Fatalf("start of a vm without a root disk: %v", err)
	}
	r.mustCall(api.MethodVMDelete, api.VMRef{Ref: "ran"}, nil)
	r.checkGone("k3")
}

// TestInterruptedDeleteIsFinished: a delete killed after some disks were
// removed (or the whole directory) is finished at start-up; and deleting a
// VM whose disks are partly gone succeeds on a running daemon too.
func TestInterruptedDeleteIsFinished(t *testing.T) {
	for name, files := range map[string][]string{
		"work disk left": {"work.ext4"},
		"root disk left": {"rootfs.ext4"},
		"dir left empty": {},
		"dir gone":       nil,
	} {
		t.Run(name, func(t *testing.T) {
			r := newRig(t, nil)
			r.start()
			r.registerImage()
			r.stop()
			st := storage.State{Driver: storage.DriverCopy, Phase: storage.PhaseDown, RootDisk: "$DIR/rootfs.ext4", WorkDisk: "$DIR/work.ext4"}
			vm := r.plantVM("gone", api.StateStopped, st, []string{opDelete}, files)
			r.host.taps[vm.Tap] = true // a tap a stop before the delete may have left
			r.start()
			r.checkGone("gone")
			if taps := r.host.liveTaps(); len(taps) != 0 {
				t.Fatalf("taps left: %v", taps)
			}
		})
	}
	t.Run("partly gone, no intent", func(t *testing.T) {
		r := newRig(t, nil)
		r.start()
		r.registerImage()
		v := r.create("half")
		for _, f := range []string{"rootfs.ext4", "work.ext4"} {
			if err := os.Remove(filepath.Join(v.Dir, f)); err != nil {
				t.Fatal(err)
			}
		}
		r.mustCall(api.MethodVMDelete, api.VMRef{Ref: "half"}, nil)
		r.checkGone("half")
		v = r.create("nodir")
		os.RemoveAll(v.Dir)
		r.mustCall(api.MethodVMDelete, api.VMRef{Ref: "nodir"}, nil)
		r.checkGone("nodir")
	})
}

// TestInterruptedStartAndStopEndStopped: a start or stop whose process is
// gone ends stopped with its tap and NAT entry released and a reason.
func TestInterruptedStartAndStopEndStopped(t *testing.T) {
	r := newRig(t, nil)
	r.start()
	r.registerImage()
	r.stop()
	ready := storage.State{Driver: storage.DriverCopy, Phase: storage.PhaseReady, RootDisk: "$DIR/rootfs.ext4", WorkDisk: "$DIR/work.ext4"}
	a := r.plantVM("starting", api.StateStarting, ready, []string{opStart}, []string{"rootfs.ext4", "work.ext4"})
	b := r.plantVM("stopping", api.StateStopping, ready, []string{opStop}, []string{"rootfs.ext4", "work.ext4"})
	// A restart killed between its stop and its start: two intents.
	c := r.plantVM("both", api.StateStarting, ready, []string{opStop, opStart}, []string{"rootfs.ext4", "work.ext4"})
	for _, v := range []store.VM{a, b, c} {
		r.host.taps[v.Tap] = true
		r.host.nat[v.IP] = true
	}
	r.start()
	if taps := r.host.liveTaps(); len(taps) != 0 {
		t.Fatalf("taps left: %v", taps)
	}
	if n := r.host.natCount(); n != 0 {
		t.Fatalf("%d nat members left", n)
	}
	if ins := r.intents(); len(ins) != 0 {
		t.Fatalf("intents left: %+v", ins)
	}
	for _, v := range r.vms() {
		if v.State != api.StateStopped || v.PID != 0 || !strings.Contains(v.StopReason, "interrupted") {
			t.Errorf("%s: state %s pid %d reason %q", v.Name, v.State, v.PID, v.StopReason)
		}
		st := r.storageOf(v.ID)
		if st.Phase != storage.PhaseDown {
			t.Errorf("%s: storage phase %q, want down", v.Name, st.Phase)
		}
		r.mustCall(api.MethodVMDelete, api.VMRef{Ref: v.Name}, nil)
	}
	r.checkGone("starting")
}

func (r *rig) storageOf(id string) storage.State {
	r.t.Helper()
	vm, err := r.d.store.GetVM(context.Background(), id)
	if err != nil {
		r.t.Fatal(err)
	}
	st, err := vmStorage(&vm)
	if err != nil {
		r.t.Fatal(err)
	}
	return st
}

// TestInterruptedGrowIsFinished: a work-disk grow killed midway is
// repeated and recorded at start-up.
func TestInterruptedGrowIsFinished(t *testing.T) {
	r := newRig(t, nil)
	r.start()
	r.registerImage()
	v := r.create("grow")
	r.stop()
	s := r.openStore()
	data, _ := json.Marshal(growData{Bytes: 16 << 20})
	if err := s.BeginIntent(context.Background(), &store.Intent{VMID: v.ID, Op: opGrow, Data: data}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	grows := r.host.count("GrowFS")
	r.start()
	var got api.VM
	r.mustCall(api.MethodVMGet, api.VMRef{Ref: "grow"}, &got)
	fi, err := os.Stat(got.WorkDisk)
	if err != nil || fi.Size() != 16<<20 || got.WorkDiskBytes != 16<<20 || r.host.count("GrowFS") != grows+1 {
		t.Fatalf("after recovery: recorded %d, file %v %v, growfs calls %d (was %d)", got.WorkDiskBytes, fi, err, r.host.count("GrowFS"), grows)
	}
	if ins := r.intents(); len(ins) != 0 {
		t.Fatalf("intents left: %+v", ins)
	}
}

// TestTeardownWithoutImage: a VM whose image row is gone still gives back
// the loop and dm devices its recorded storage state names (item 5: the
// release was skipped silently when GetImage failed).
func TestTeardownWithoutImage(t *testing.T) {
	r := newRig(t, nil)
	r.start()
	r.registerImage()
	r.stop()
	st := storage.State{Driver: storage.DriverDM, Phase: storage.PhaseReady, RootDisk: "/dev/mapper/banger-x", COWPath: "$DIR/cow.img",
		Handles: []storage.Handle{
			{Kind: storage.KindLoop, Name: "/dev/loop7", Backing: "/img", Role: storage.RoleImage, State: storage.StateDone},
			{Kind: storage.KindLoop, Name: "/dev/loop8", Backing: "$DIR/cow.img", Role: storage.RoleCOW, State: storage.StateDone},
			{Kind: storage.KindDM, Name: "banger-x-origin", Role: storage.RoleOrigin, State: storage.StateDone},
			{Kind: storage.KindDM, Name: "banger-x", Role: storage.RoleSnapshot, State: storage.StateDone},
		}}
	vm := r.plantVM("orphan", api.StateStopped, st, nil, []string{"cow.img", "work.ext4"})
	r.host.loops["/dev/loop7"], r.host.loops["/dev/loop8"] = "/img", filepath.Join(vm.Dir, "cow.img")
	r.host.dms["banger-x-origin"], r.host.dms["banger-x"] = true, true
	// The image row goes behind the store's back (foreign keys off).
	db, err := sql.Open("sqlite", "file:"+r.paths().DBFile+"?_pragma=foreign_keys(0)")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`DELETE FROM images`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	r.start()
	r.mustCall(api.MethodVMStop, api.VMStopParams{Ref: "orphan"}, nil)
	if got := r.storageOf(vm.ID); got.Phase != storage.PhaseDown || len(got.Handles) != 0 {
		t.Fatalf("storage after stop: %+v", got)
	}
	if r.host.count("DMRemove") != 2 || r.host.count("LoopDetach") != 2 || len(r.host.dms) != 0 || len(r.host.loops) != 0 {
		t.Fatalf("devices left: dm %v loops %v (calls %v)", r.host.dms, r.host.loops, r.host.calls)
	}
	r.mustCall(api.MethodVMDelete, api.VMRef{Ref: "orphan"}, nil)
	r.checkGone("orphan")
}

// TestImageIntentsAndSeeds: an interrupted register or build leaves no
// image files; an interrupted delete finishes; the work-disk seeds of a
// deleted image go with it; probe files, seeds of gone images and VM
// directories without a VM are removed at start-up.
func TestImageIntentsAndSeeds(t *testing.T) {
	r := newRig(t, nil)
	r.start()
	img := r.registerImage()
	v := r.create("seeded")
	seeds := filepath.Join(r.paths().StateDir, "seeds")
	listSeeds := func() []string { // the files, grown roots included
		var out []string
		filepath.WalkDir(seeds, func(p string, e fs.DirEntry, err error) error {
			if err == nil && !e.IsDir() {
				rel, _ := filepath.Rel(seeds, p)
				out = append(out, rel)
			}
			return nil
		})
		return out
	}
	if s := listSeeds(); len(s) != 2 || !strings.HasPrefix(s[0], img.ID+"-") || !strings.HasPrefix(s[1], filepath.Join("roots", img.ID)+"/") {
		t.Fatalf("seeds after create: %v, want the work-disk seed and a grown root of image %s", s, img.ID)
	}
	r.mustCall(api.MethodVMDelete, api.VMRef{Ref: v.Name}, nil)
	r.mustCall(api.MethodImageDelete, api.ImageRef{Name: "debian"}, nil)
	if s := listSeeds(); len(s) != 0 {
		t.Fatalf("seeds of the deleted image left: %v", s)
	}
	if ents, _ := os.ReadDir(r.paths().ImagesDir); len(ents) != 0 {
		t.Fatalf("image files left: %v", ents)
	}
	r.stop()

	// Plant what interrupted operations and older builds leave.
	s := r.openStore()
	ctx := context.Background()
	reg, build, del := store.NewID(), store.NewID(), store.NewID()
	for _, p := range []struct{ id, op string }{{reg, opImageRegister}, {build, opImageBuild}, {del, opImageDelete}} {
		dir := filepath.Join(r.paths().ImagesDir, p.id)
		os.MkdirAll(dir, 0o700)
		os.WriteFile(filepath.Join(dir, "rootfs.ext4"), []byte("x"), 0o600)
		data, _ := json.Marshal(imageData{Name: p.op, Dir: dir})
		if err := s.BeginIntent(ctx, &store.Intent{ImageID: p.id, Op: p.op, Data: data}); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	os.MkdirAll(seeds, 0o700)
	os.MkdirAll(filepath.Join(seeds, "roots", del), 0o700)
	os.MkdirAll(filepath.Join(seeds, "roots", reg), 0o700)
	for _, f := range []string{del + "-400000-1.ext4", "0123456789-1-2.ext4.tmp", "roots/" + del + "/1-2-3.ext4", "roots/" + reg + "/1-2-3.ext4.tmp"} {
		os.WriteFile(filepath.Join(seeds, f), nil, 0o600)
	}
	probe := filepath.Join(r.paths().StateDir, ".doctor-1234")
	os.WriteFile(probe, nil, 0o600)
	orphan := filepath.Join(r.paths().VMsDir, "abcdef0123")
	os.MkdirAll(orphan, 0o700)
	r.start()
	if ents, _ := os.ReadDir(r.paths().ImagesDir); len(ents) != 0 {
		t.Fatalf("image directories left: %v", ents)
	}
	if ins := r.intents(); len(ins) != 0 {
		t.Fatalf("intents left: %+v", ins)
	}
	if s := listSeeds(); len(s) != 0 {
		t.Fatalf("seeds left: %v", s)
	}
	if _, err := os.Stat(probe); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("probe file left: %v", err)
	}
	if _, err := os.Stat(orphan); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("orphan vm directory left: %v", err)
	}
	var l api.ImageList
	r.mustCall(api.MethodImageList, nil, &l)
	if len(l.Images) != 0 {
		t.Fatalf("images: %+v", l.Images)
	}
}

// TestRecoveryOnLock: an intent left by an operation that could not record
// its end is finished by the next command that takes the VM's lock, not
// only at start-up.
func TestRecoveryOnLock(t *testing.T) {
	r := newRig(t, nil)
	r.start()
	r.registerImage()
	v := r.create("later")
	ctx := context.Background()
	if err := r.d.store.BeginIntent(ctx, &store.Intent{VMID: v.ID, Op: opDelete}); err != nil {
		t.Fatal(err)
	}
	err := r.call(api.MethodVMStart, api.VMRef{Ref: "later"}, nil)
	if err == nil || !strings.Contains(err.Error(), "removed it") {
		t.Fatalf("start of a vm whose delete was interrupted: %v", err)
	}
	r.checkGone("later")
	if !slices.Equal(r.host.liveTaps(), nil) {
		t.Fatalf("taps: %v", r.host.liveTaps())
	}
}
