//go:build system

package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/api"
)

// debugfs runs a debugfs request against an ext4 file.
func debugfs(t *testing.T, write bool, img, req string) string {
	t.Helper()
	args := []string{"-R", req, img}
	if write {
		args = append([]string{"-w"}, args...)
	}
	out, err := exec.Command("debugfs", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs %s: %v: %s", req, err, out)
	}
	return string(out)
}

// TestWorkDiskGrowAndNestedRepair: the work disk grows on a stopped VM only,
// never shrinks, and a disk made by an older build with the home one level
// too deep is flattened on its first start, and only then.
func TestWorkDiskGrowAndNestedRepair(t *testing.T) {
	if _, err := exec.LookPath("debugfs"); err != nil {
		t.Skip("needs debugfs (e2fsprogs; CI installs it)")
	}
	e := newEnv(t, "")
	e.registerImage()
	e.ok("vm", "create", "disk", "--no-start", "--work-disk-size", "64M")
	v := e.vm("disk")
	if v.State != api.StateCreated {
		t.Fatalf("state %s, want created", v.State)
	}
	work := filepath.Join(v.Dir, "work.ext4")
	if !strings.Contains(debugfs(t, false, work, "ls -l /"), ".bashrc") {
		t.Fatal("work disk not seeded from the image's /root")
	}

	// Grow: refused while running, refused when shrinking, done when stopped.
	_, errOut, code := e.banger("vm", "set", "disk", "--work-disk-size", "32M")
	if code == 0 || !strings.Contains(errOut, "shrink") {
		t.Fatalf("shrink: code %d %q", code, errOut)
	}
	e.ok("vm", "set", "disk", "--work-disk-size", "128M")
	if fi, err := os.Stat(work); err != nil || fi.Size() != 128<<20 {
		t.Fatalf("work disk size after grow: %v %v", fi, err)
	}
	if out := debugfs(t, false, work, "stats"); !strings.Contains(out, "Block count:") {
		t.Fatalf("not a filesystem after grow: %s", out)
	}

	// An older build's layout: /root/root/.profile and a clash on .bashrc.
	debugfs(t, true, work, "mkdir root")
	prof := filepath.Join(e.dir, "profile")
	os.WriteFile(prof, []byte("# nested profile\n"), 0o644)
	debugfs(t, true, work, "write "+prof+" root/.profile")
	debugfs(t, true, work, "write "+prof+" root/.bashrc")
	out := e.ok("vm", "start", "disk")
	if !strings.Contains(out+e.daemonLogTail(), "nested") {
		t.Fatalf("no word of the repair:\n%s\n%s", out, e.daemonLogTail())
	}
	e.ok("vm", "stop", "disk")
	top := debugfs(t, false, work, "ls -l /")
	if strings.Contains(top, " root\n") || !strings.Contains(top, ".profile") || !strings.Contains(top, ".bashrc.nested") {
		t.Fatalf("not flattened:\n%s", top)
	}
	// The check ran once for this disk: a root/ the guest makes later in its
	// own home is its business, and later starts leave it alone.
	debugfs(t, true, work, "mkdir root")
	debugfs(t, true, work, "write "+prof+" root/.profile")
	e.ok("vm", "start", "disk")
	e.ok("vm", "stop", "disk")
	if inner := debugfs(t, false, work, "ls -l /root"); !strings.Contains(inner, ".profile") {
		t.Fatalf("a later start touched the guest's own root/ directory:\n%s", inner)
	}

	_, errOut, code = e.banger("vm", "set", "disk", "--work-disk-size", "256M")
	if code != 0 {
		t.Fatalf("grow on stopped vm: %q", errOut)
	}
	e.ok("vm", "start", "disk")
	_, errOut, code = e.banger("vm", "set", "disk", "--work-disk-size", "512M")
	if code == 0 || !strings.Contains(errOut, "stop it") {
		t.Fatalf("grow while running: code %d %q", code, errOut)
	}
	e.ok("vm", "delete", "disk")
	e.assertClean()
}
