package image

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestCheckKernel(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	junk := make([]byte, 64<<10)
	rand.Read(junk)
	junk[0] = 0 // never an ELF magic by chance
	if err := CheckKernel(write("junk", junk)); err == nil || !strings.Contains(err.Error(), "is not a kernel image") {
		t.Errorf("random bytes: %v", err)
	}
	if err := CheckKernel(write("empty", nil)); err == nil {
		t.Error("empty file accepted")
	}
	// This test binary is an ELF executable for the host.
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckKernel(exe); err != nil {
		t.Errorf("host ELF executable: %v", err)
	}
	// An ELF for another machine.
	other := make([]byte, 64)
	copy(other, "\x7fELF\x02\x01\x01")
	binary.LittleEndian.PutUint16(other[16:], 2)   // ET_EXEC
	binary.LittleEndian.PutUint16(other[18:], 243) // EM_RISCV
	binary.LittleEndian.PutUint32(other[20:], 1)
	binary.LittleEndian.PutUint16(other[52:], 64)
	if err := CheckKernel(write("riscv", other)); err == nil || !strings.Contains(err.Error(), "not for this host") {
		t.Errorf("foreign ELF: %v", err)
	}
	if err := CheckKernel(write("elfish", []byte("\x7fELF garbage"))); err == nil || !strings.Contains(err.Error(), "starts like an ELF") {
		t.Errorf("broken ELF: %v", err)
	}
	if runtime.GOARCH == "amd64" {
		bz := make([]byte, 0x400)
		bz[0x1fe], bz[0x1ff] = 0x55, 0xaa
		copy(bz[0x202:], "HdrS")
		if err := CheckKernel(write("bzImage", bz)); err != nil {
			t.Errorf("bzImage header: %v", err)
		}
	}
}

// mkImage builds an ext4 image from a tree that setup fills.
func mkImage(t *testing.T, setup func(root string)) string {
	t.Helper()
	for _, tool := range []string{"mkfs.ext4", "debugfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (e2fsprogs)", tool)
		}
	}
	dir := t.TempDir()
	root := filepath.Join(dir, "tree")
	os.MkdirAll(root, 0o755)
	setup(root)
	img := filepath.Join(dir, "rootfs.ext4")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", root, img, "16M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	return img
}

func file(t *testing.T, p string, mode os.FileMode) {
	t.Helper()
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"), mode); err != nil {
		t.Fatal(err)
	}
	os.Chmod(p, mode)
}

func link(t *testing.T, target, p string) {
	t.Helper()
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
}

func TestCheckRootfs(t *testing.T) {
	long := "/usr/lib/systemd/" + strings.Repeat("s", 70) // a slow symlink (> 60 bytes)
	tests := []struct {
		name  string
		setup func(root string)
		found string // "" means refused
		why   string
	}{
		{"empty ext4", func(string) {}, "", "has no init: none of /sbin/init, /etc/init, /bin/init, /bin/sh"},
		{"plain init", func(r string) { file(t, r+"/sbin/init", 0o755) }, "/sbin/init", ""},
		{"merged usr, relative links", func(r string) {
			// As in Debian: /sbin -> usr/sbin, /usr/sbin/init -> ../lib/systemd/systemd.
			// There is no /lib here, so ../ must resolve from /usr/sbin, as the kernel does.
			link(t, "usr/sbin", r+"/sbin")
			link(t, "../lib/systemd/systemd", r+"/usr/sbin/init")
			file(t, r+"/usr/lib/systemd/systemd", 0o755)
		}, "/sbin/init -> /usr/lib/systemd/systemd", ""},
		{"absolute slow link", func(r string) {
			link(t, long, r+"/sbin/init")
			file(t, r+long, 0o755)
		}, "/sbin/init -> " + long, ""},
		{"dangling init", func(r string) {
			link(t, "/lib/systemd/systemd", r+"/sbin/init")
		}, "", "/sbin/init -> /lib does not exist"},
		{"not executable", func(r string) { file(t, r+"/sbin/init", 0o644) }, "", "/sbin/init is not executable (mode 0644)"},
		{"init is a directory", func(r string) { os.MkdirAll(r+"/sbin/init", 0o755) }, "", "/sbin/init is a directory, not a file"},
		{"link loop", func(r string) { link(t, "init", r+"/sbin/init") }, "", "too many levels of symbolic links"},
		{"only a shell", func(r string) { file(t, r+"/bin/sh", 0o755) }, "/bin/sh", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img := mkImage(t, tt.setup)
			got, err := CheckRootfs(context.Background(), img)
			if tt.found != "" {
				if err != nil || got != tt.found {
					t.Fatalf("CheckRootfs = %q, %v; want %q", got, err, tt.found)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.why) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("CheckRootfs = %q, %v; want one line with %q", got, err, tt.why)
			}
		})
	}
}

func TestCheckRootfsNotExt4(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.img")
	b := make([]byte, 1<<20)
	rand.Read(b)
	os.WriteFile(junk, b, 0o644)
	if _, err := CheckRootfs(context.Background(), junk); err == nil || !strings.Contains(err.Error(), "is not an ext4 filesystem") {
		t.Errorf("random bytes: %v", err)
	}
	img := mkImage(t, func(r string) { file(t, r+"/sbin/init", 0o755) })
	if err := os.Truncate(img, 1<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := CheckRootfs(context.Background(), img); err == nil || !strings.Contains(err.Error(), "is truncated") {
		t.Errorf("truncated image: %v", err)
	}
}
