package storage

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
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
