package storage

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The copy driver grows an image to a disk size once: later roots of that
// image and size are plain copies; a new version of the image, more than
// keepGrown sizes, a failed grow and a deleted image each leave the cache
// as they should.
func TestGrownRootCache(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "image.ext4")
	writeFakeExt4(t, img, 4<<20)
	host := newFakeHost(t, &recorder{})
	seeds := filepath.Join(dir, "seeds")
	m, err := New(Options{Driver: DriverCopy, Host: host, SeedDir: seeds})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	n := 0
	create := func(size int64) (State, Made, error) {
		n++
		vmDir := filepath.Join(dir, fmt.Sprintf("vm%d", n))
		if err := os.Mkdir(vmDir, 0o700); err != nil {
			t.Fatal(err)
		}
		return m.CreateRoot(ctx, Disk{VMID: fmt.Sprintf("vm%d", n), VMDir: vmDir, ImagePath: img, ImageID: "img1", DiskBytes: size})
	}
	cached := func() []string {
		ents, _ := os.ReadDir(filepath.Join(seeds, "roots", "img1"))
		var out []string
		for _, e := range ents {
			out = append(out, e.Name())
		}
		return out
	}
	grows := func() int { host.mu.Lock(); defer host.mu.Unlock(); return host.counts["GrowFS"] }

	st, made, err := create(8 << 20)
	if err != nil {
		t.Fatal(err)
	}
	if made.Driver != DriverCopy || made.Grown != GrownBuilt || (made.Copy != CopySparse && made.Copy != CopyReflink) {
		t.Errorf("first root of a size made %+v, want a copy of a grown root built for it", made)
	}
	_, made, err = create(8 << 20)
	if err != nil {
		t.Fatal(err)
	}
	if made.Grown != GrownCached || !strings.Contains(made.String(), "of the cached grown root") {
		t.Errorf("second root of a size made %+v (%q), want a copy of the cached grown root", made, made)
	}
	if g := grows(); g != 1 {
		t.Errorf("two roots of one size grew the filesystem %d times, want once", g)
	}
	if c := cached(); len(c) != 1 {
		t.Fatalf("cache after two creates: %v", c)
	}
	want, _ := os.ReadFile(filepath.Join(seeds, "roots", "img1", cached()[0]))
	got, _ := os.ReadFile(st.RootDisk)
	if len(got) != 8<<20 || !bytes.Equal(got, want) {
		t.Errorf("root disk is %d bytes and differs from the grown image (%d bytes)", len(got), len(want))
	}

	for _, size := range []int64{12 << 20, 16 << 20, 20 << 20} {
		// Entries last used an hour earlier, in the same order: only those
		// may be trimmed.
		for _, c := range cached() {
			p := filepath.Join(seeds, "roots", "img1", c)
			if fi, err := os.Stat(p); err == nil {
				old := fi.ModTime().Add(-time.Hour)
				os.Chtimes(p, old, old)
			}
		}
		if _, _, err := create(size); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond) // distinct mtimes
	}
	if c := cached(); len(c) != keepGrown || strings.Contains(strings.Join(c, " "), fmt.Sprintf("-%x.ext4", 8<<20)) {
		t.Errorf("cache after four sizes: %v, want the %d most recent", c, keepGrown)
	}
	// One used within growUseWindow is kept even past keepGrown (a create
	// may be copying it).
	for _, c := range cached() {
		now := time.Now()
		os.Chtimes(filepath.Join(seeds, "roots", "img1", c), now, now)
	}
	if _, _, err := create(28 << 20); err != nil {
		t.Fatal(err)
	}
	if c := cached(); len(c) != keepGrown+1 {
		t.Errorf("cache after a fifth size with all recently used: %v, want all %d kept", c, keepGrown+1)
	}

	// A failed grow caches nothing and leaves no half-built file.
	host.failOn = []string{fmt.Sprintf("GrowFS#%d", grows()+1)}
	if _, _, err := create(24 << 20); err == nil {
		t.Fatal("a root whose grow failed was created")
	}
	for _, c := range cached() {
		if strings.HasSuffix(c, ".tmp") || strings.HasSuffix(c, fmt.Sprintf("-%x.ext4", 24<<20)) {
			t.Errorf("a failed grow left %s", c)
		}
	}

	// A new version of the image replaces every entry of the old one.
	later := time.Now().Add(time.Hour)
	os.Chtimes(img, later, later)
	if _, _, err := create(8 << 20); err != nil {
		t.Fatal(err)
	}
	if c := cached(); len(c) != 1 {
		t.Errorf("cache after the image changed: %v, want only the new version's entry", c)
	}

	if _, err := m.RemoveSeeds("img1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(seeds, "roots", "img1")); !os.IsNotExist(err) {
		t.Errorf("grown roots of a deleted image remain: %v", err)
	}
}
