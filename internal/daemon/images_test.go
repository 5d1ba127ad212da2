package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	"banger/internal/api"
	"banger/internal/store"
)

// TestImageListFlagsStale: an image built from an older package list is
// flagged; one built from the current list, and a registered one, are not.
func TestImageListFlagsStale(t *testing.T) {
	scripts := t.TempDir()
	list := []byte("git\ncurl\n")
	os.WriteFile(filepath.Join(scripts, "packages.apt"), list, 0o644)
	os.MkdirAll(filepath.Join(scripts, "debian"), 0o755)
	for _, f := range []string{"debian/customize.sh", "debian/enter-chroot.sh"} {
		os.WriteFile(filepath.Join(scripts, f), []byte("#!/bin/sh\n"), 0o755)
	}
	t.Setenv("BANGER_IMAGES_DIR", scripts)
	getenv := testEnv(t)
	td := startTestDaemon(t, getenv)
	sum := sha256.Sum256(list)
	st, err := store.Open(context.Background(), td.paths.DBFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, im := range []store.Image{
		{Name: "old", RootfsPath: "/x/old.ext4", Source: store.SourceBuilt, PackagesHash: "0123"},
		{Name: "fresh", RootfsPath: "/x/fresh.ext4", Source: store.SourceBuilt, PackagesHash: hex.EncodeToString(sum[:])},
		{Name: "mine", RootfsPath: "/x/mine.ext4", Source: store.SourceRegistered},
	} {
		if err := st.CreateImage(context.Background(), &im); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()
	var l api.ImageList
	if err := td.cl.Call(context.Background(), api.MethodImageList, nil, &l); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, im := range l.Images {
		got[im.Name] = im.Stale
	}
	if !got["old"] || got["fresh"] || got["mine"] || len(got) != 3 {
		t.Fatalf("stale flags: %v", got)
	}
}
