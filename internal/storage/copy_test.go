package storage

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestSparseCopy(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	data := make([]byte, 1<<20)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{0, 40 << 20, 100<<20 + 12345} {
		if _, err := f.WriteAt(data, off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(128 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	dst := filepath.Join(dir, "dst")
	if err := SparseCopy(context.Background(), src, dst); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(src)
	b, _ := os.ReadFile(dst)
	if !bytes.Equal(a, b) {
		t.Fatal("copy differs from source")
	}
	fi, _ := os.Stat(dst)
	if used := fi.Sys().(*syscall.Stat_t).Blocks * 512; used > 8<<20 {
		t.Errorf("copy of 3 MiB of data in a 128 MiB file allocates %d bytes: holes were filled", used)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("copy mode %v, want 0600", fi.Mode().Perm())
	}
	if err := SparseCopy(context.Background(), src, dst); err == nil || !strings.Contains(err.Error(), dst) {
		t.Errorf("copy over an existing file: %v", err)
	}
	if err := SparseCopy(context.Background(), filepath.Join(dir, "nope"), filepath.Join(dir, "x")); err == nil {
		t.Error("copy of a missing file succeeded")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := SparseCopy(ctx, src, filepath.Join(dir, "cancelled")); err == nil {
		t.Log("cancelled copy finished (reflinked at once)")
	} else if _, serr := os.Stat(filepath.Join(dir, "cancelled")); !os.IsNotExist(serr) {
		t.Error("cancelled copy left its file")
	}
}

// sparseCopy says which way it copied, and that is the way the copy was
// made: a reflinked copy shares its extents with the source (FIEMAP's
// shared flag, as filefrag shows it), a sparse one has its own.
func TestSparseCopySaysHow(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	data := make([]byte, 256<<10)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "dst")
	how, err := sparseCopy(context.Background(), src, dst)
	if err != nil {
		t.Fatal(err)
	}
	if how != CopyReflink && how != CopySparse {
		t.Fatalf("sparseCopy says %q, want %q or %q", how, CopyReflink, CopySparse)
	}
	if b, _ := os.ReadFile(dst); !bytes.Equal(b, data) {
		t.Fatal("copy differs from source")
	}
	syscall.Sync() // so filefrag sees allocated extents, not delayed ones
	out, err := exec.Command("filefrag", "-v", dst).CombinedOutput()
	if err != nil {
		t.Logf("copied by %s; not cross-checked: filefrag -v: %v %s", how, err, out)
		return
	}
	if shared := strings.Contains(string(out), "shared"); shared != (how == CopyReflink) {
		t.Errorf("sparseCopy says %s but filefrag shows shared extents: %v\n%s", how, shared, out)
	}
}

func TestMadeString(t *testing.T) {
	for _, c := range []struct {
		m    Made
		want string
	}{
		{Made{Driver: DriverCopy, Copy: CopyReflink, Grown: GrownCached, Took: 3 * time.Millisecond}, "copy (reflink of the cached grown root, 3 ms)"},
		{Made{Driver: DriverCopy, Copy: CopySparse, Grown: GrownBuilt, Took: 1240 * time.Millisecond}, "copy (sparse, grown root built, 1.2 s)"},
		{Made{Driver: DriverCopy, Copy: CopySparse, Grown: GrownInPlace, Took: 400 * time.Millisecond}, "copy (sparse, grown in place, 400 ms)"},
		{Made{Driver: DriverDM, Took: time.Millisecond}, "dm snapshot (sparse COW file, 1 ms)"},
	} {
		if got := c.m.String(); got != c.want {
			t.Errorf("%+v: %q, want %q", c.m, got, c.want)
		}
	}
}

// CreateRoot says how it made each root disk.
func TestCreateRootSaysHow(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "image.ext4")
	writeFakeExt4(t, img, 4<<20)
	for _, c := range []struct {
		driver, seeds, imageID, grown string
	}{
		{DriverCopy, "", "", GrownInPlace},
		{DriverCopy, filepath.Join(dir, "seeds"), "img1", GrownBuilt},
		{DriverDM, "", "", ""},
	} {
		m, err := New(Options{Driver: c.driver, Host: newFakeHost(t, &recorder{}), SeedDir: c.seeds})
		if err != nil {
			t.Fatal(err)
		}
		vmDir, err := os.MkdirTemp(dir, "vm")
		if err != nil {
			t.Fatal(err)
		}
		_, made, err := m.CreateRoot(context.Background(), Disk{VMID: "abc", VMDir: vmDir, ImagePath: img, ImageID: c.imageID, DiskBytes: 8 << 20})
		if err != nil {
			t.Fatal(err)
		}
		if made.Driver != c.driver || made.Grown != c.grown || made.Took <= 0 {
			t.Errorf("%s driver, seeds %q: made %+v, want grown %q and a duration", c.driver, c.seeds, made, c.grown)
		}
		if c.driver == DriverCopy && made.Copy != CopySparse && made.Copy != CopyReflink {
			t.Errorf("copy driver: made %+v says no copy method", made)
		}
		if c.driver == DriverDM && made.Copy != "" {
			t.Errorf("dm driver: made %+v says it copied", made)
		}
	}
}
