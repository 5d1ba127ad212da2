//go:build system

package test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestImageRegisterAndDelete: register copies the image into banger's
// state, every bad input is refused with a clear line and changes nothing,
// and delete is refused while a VM uses the image, naming the VM.
func TestImageRegisterAndDelete(t *testing.T) {
	e := newEnv(t, "")
	e.registerImage()
	out := e.ok("image", "list", "--json")
	if !strings.Contains(out, filepath.Join(e.state, "images")) {
		t.Fatalf("registered image not copied into the state dir: %s", out)
	}
	notExt4 := filepath.Join(e.dir, "junk.img")
	os.WriteFile(notExt4, make([]byte, 4096), 0o644)
	junkKernel := filepath.Join(e.dir, "junk-vmlinux")
	os.WriteFile(junkKernel, []byte(strings.Repeat("random bytes, not a kernel ", 500)), 0o644)
	emptyExt4 := filepath.Join(e.dir, "empty.ext4")
	run(t, "mkfs.ext4", "-q", "-F", emptyExt4, "16M")
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"not ext4", []string{"image", "register", "junk", "--rootfs", notExt4}, "not an ext4"},
		{"missing rootfs", []string{"image", "register", "gone", "--rootfs", filepath.Join(e.dir, "nope.ext4")}, "nope.ext4"},
		{"name taken", []string{"image", "register", "debian", "--rootfs", filepath.Join(e.dir, "img.ext4")}, "already exists"},
		{"kernel missing", []string{"image", "register", "k", "--rootfs", filepath.Join(e.dir, "img.ext4"), "--kernel", filepath.Join(e.dir, "nokernel")}, "nokernel"},
		{"bad name", []string{"image", "register", "Bad_Name", "--rootfs", filepath.Join(e.dir, "img.ext4")}, "image name"},
		{"no rootfs flag", []string{"image", "register", "x"}, "--rootfs"},
		{"junk kernel", []string{"image", "register", "k2", "--rootfs", filepath.Join(e.dir, "img.ext4"), "--kernel", junkKernel}, "is not a kernel image"},
		{"empty ext4", []string{"image", "register", "debian2", "--rootfs", emptyExt4}, "has no init"},
	}
	for _, c := range cases {
		_, errOut, code := e.banger(c.args...)
		wantCode := 2
		if c.name == "name taken" {
			wantCode = 1 // a conflict with what exists, not a malformed request
		}
		if code != wantCode || !strings.Contains(errOut, c.want) || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
			t.Errorf("%s: code %d stderr %q, want exit %d with one line containing %q", c.name, code, errOut, wantCode, c.want)
		}
	}
	if out := e.ok("image", "list"); strings.Count(out, "\n") != 2 {
		t.Fatalf("refused registrations changed the list:\n%s", out)
	}
	e.ok("vm", "create", "user1", "--no-start")
	_, errOut, code := e.banger("image", "delete", "debian")
	if code == 0 || !strings.Contains(errOut, "user1") {
		t.Fatalf("delete while used: code %d %q", code, errOut)
	}
	e.ok("vm", "delete", "user1")
	e.ok("image", "delete", "debian")
	if ents, _ := os.ReadDir(filepath.Join(e.state, "images")); len(ents) != 0 {
		t.Fatalf("image files left after delete: %v", ents)
	}
}
