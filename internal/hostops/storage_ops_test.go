package hostops

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/blockdev"
)

func superblock(magic uint16, blocks uint64, logBS uint32, is64 bool) []byte {
	b := make([]byte, 4096)
	sb := b[1024:]
	binary.LittleEndian.PutUint32(sb[4:], uint32(blocks))
	binary.LittleEndian.PutUint32(sb[24:], logBS)
	binary.LittleEndian.PutUint16(sb[56:], magic)
	if is64 {
		binary.LittleEndian.PutUint32(sb[96:], 0x80)
		binary.LittleEndian.PutUint32(sb[336:], uint32(blocks>>32))
	}
	return b
}

func TestExt4Bytes(t *testing.T) {
	tests := []struct {
		name string
		data []byte
		want int64
		err  error
	}{
		{"4k blocks", superblock(0xEF53, 1024, 2, false), 4 << 20, nil},
		{"1k blocks", superblock(0xEF53, 1024, 0, false), 1 << 20, nil},
		{"64bit", superblock(0xEF53, 1<<33, 2, true), 1 << 45, nil},
		{"no magic", superblock(0x1234, 1024, 2, false), 0, ErrNotExt4},
		{"too short", make([]byte, 1500), 0, ErrNotExt4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Ext4Bytes(bytes.NewReader(tt.data))
			if !errors.Is(err, tt.err) || got != tt.want {
				t.Errorf("Ext4Bytes = %d, %v; want %d, %v", got, err, tt.want, tt.err)
			}
		})
	}
}

func TestCheckDMName(t *testing.T) {
	for name, ok := range map[string]bool{
		"banger-0123abcdef":        true,
		"banger-0123abcdef-origin": true,
		"banger-":                  false,
		"vg0-root":                 false,
		"banger-../../x":           false,
		"banger-A":                 false,
		"xbanger-a":                false,
	} {
		err := checkDMName(name)
		if (err == nil) != ok || (err != nil && !errors.Is(err, ErrRefused)) {
			t.Errorf("checkDMName(%q) = %v, want ok=%v", name, err, ok)
		}
	}
}

func writeFiles(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for p, body := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: loop devices and privileged storage ops")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skip("needs loop devices: /dev/loop-control missing")
	}
}

func detachOnCleanup(t *testing.T, path string) {
	t.Cleanup(func() {
		devs, _ := blockdev.LoopsBackedBy(sysRoot, path, false)
		for _, d := range devs {
			_, _ = Run(context.Background(), "losetup", "-d", d)
		}
	})
}

func TestLoopAttachDetachPrivileged(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	roots := t.TempDir()
	c := New(Options{Roots: []string{roots}})
	file := filepath.Join(roots, "disk.img")
	if err := os.WriteFile(file, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	detachOnCleanup(t, file)
	for _, ro := range []bool{true, false} {
		dev, err := c.LoopAttach(ctx, file, ro)
		if err != nil {
			t.Fatal(err)
		}
		if b, _ := c.LoopBacking(ctx, dev); b != file {
			t.Errorf("backing of %s = %q", dev, b)
		}
		flags, _ := os.ReadFile(filepath.Join(sysRoot, "block", filepath.Base(dev), "ro"))
		if got := strings.TrimSpace(string(flags)) == "1"; got != ro {
			t.Errorf("%s read-only = %v, want %v", dev, got, ro)
		}
		if devs, _ := c.LoopsBackedBy(ctx, file); len(devs) != 1 || devs[0] != dev {
			t.Errorf("LoopsBackedBy = %v", devs)
		}
		if err := c.LoopDetach(ctx, dev, file); err != nil {
			t.Fatal(err)
		}
		if b, _ := c.LoopBacking(ctx, dev); b != "" {
			t.Errorf("%s still backed by %q", dev, b)
		}
		if err := c.LoopDetach(ctx, dev, file); err != nil {
			t.Errorf("detaching a detached loop: %v", err)
		}
	}
}

func TestStorageRefusalsPrivileged(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	roots := t.TempDir()
	outside := t.TempDir()
	c := New(Options{Roots: []string{roots}})
	ours := filepath.Join(roots, "ours.img")
	theirs := filepath.Join(outside, "theirs.img")
	for _, p := range []string{ours, theirs} {
		if err := os.WriteFile(p, make([]byte, 1<<20), 0o600); err != nil {
			t.Fatal(err)
		}
		detachOnCleanup(t, p)
	}
	if err := os.Symlink(theirs, filepath.Join(roots, "sneaky.img")); err != nil {
		t.Fatal(err)
	}
	out, err := Run(ctx, "losetup", "--find", "--show", theirs)
	if err != nil {
		t.Fatal(err)
	}
	theirLoop := strings.TrimSpace(string(out))
	tests := []struct {
		name string
		call func() error
	}{
		{"attach outside roots", func() error { _, err := c.LoopAttach(ctx, theirs, true); return err }},
		{"attach symlink out of roots", func() error { _, err := c.LoopAttach(ctx, filepath.Join(roots, "sneaky.img"), true); return err }},
		{"attach a directory", func() error { _, err := c.LoopAttach(ctx, roots+"/", true); return err }},
		{"detach a loop that is not ours", func() error { return c.LoopDetach(ctx, theirLoop, ours) }},
		{"detach claiming an outside backing", func() error { return c.LoopDetach(ctx, theirLoop, theirs) }},
		{"detach a non-loop device", func() error { return c.LoopDetach(ctx, "/dev/sda", ours) }},
		{"remove a non-banger dm device", func() error { return c.DMRemove(ctx, "vg0-root") }},
		{"chown a non-banger dm device", func() error { _, err := c.DMChown(ctx, "vg0-root"); return err }},
		{"origin with a bad name", func() error { return c.DMCreateOrigin(ctx, "root", theirLoop, ours, 1<<20) }},
		{"origin over a loop that is not ours", func() error { return c.DMCreateOrigin(ctx, "banger-x-origin", theirLoop, ours, 1<<20) }},
		{"snapshot over a foreign origin", func() error { return c.DMCreateSnapshot(ctx, "banger-x", "vg0-root", theirLoop, ours) }},
		{"snapshot over a loop that is not ours", func() error { return c.DMCreateSnapshot(ctx, "banger-x", "banger-x-origin", theirLoop, ours) }},
		{"seed from an outside image", func() error { return c.SeedWorkDisk(ctx, theirs, filepath.Join(roots, "seed")) }},
		{"seed to an outside file", func() error { return c.SeedWorkDisk(ctx, ours, filepath.Join(outside, "seed")) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); !errors.Is(err, ErrRefused) {
				t.Errorf("got %v, want a refusal", err)
			}
		})
	}
	if b, _ := blockdev.LoopBacking(sysRoot, theirLoop); b != theirs {
		t.Errorf("foreign loop %s was touched: backing %q", theirLoop, b)
	}
	if _, err := os.Stat(filepath.Join(outside, "seed")); !errors.Is(err, os.ErrNotExist) {
		t.Error("seed written outside the roots")
	}
}
