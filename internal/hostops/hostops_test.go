package hostops

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestCallerPathsStayBeneathRoots(t *testing.T) {
	root := t.TempDir()
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(root, "escape")); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{root, outside} {
		if err := os.WriteFile(filepath.Join(d, "f"), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c := Caller{UID: os.Geteuid(), GID: os.Getegid(), Roots: []string{root}}
	tests := []struct {
		name string
		path string
		ok   bool
		why  string
	}{
		{"inside", filepath.Join(root, "f"), true, ""},
		{"root itself", root, false, "outside banger's directories"},
		{"relative", "vms/abc", false, "must be absolute"},
		{"dotdot", filepath.Join(root, "..") + "/" + filepath.Base(outside) + "/../" + filepath.Base(root) + "/f", false, `".."`},
		{"symlink out", filepath.Join(root, "escape", "f"), false, "symlink"},
		{"etc", "/etc/passwd", false, "outside banger's directories"},
		{"empty", "", false, "must be absolute"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cf := c.files()
			defer cf.Close()
			f, err := cf.open(tt.path, unix.O_RDONLY)
			if tt.ok {
				if err != nil {
					t.Fatalf("open(%q) = %v, want ok", tt.path, err)
				}
				f.Close()
				return
			}
			if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tt.why) {
				t.Fatalf("open(%q) = %v, want ErrRefused saying %q", tt.path, err, tt.why)
			}
		})
	}
}

func TestDispatchRefusesUnknownOpAndBadArgs(t *testing.T) {
	c := Caller{Roots: []string{t.TempDir()}}
	if _, err := dispatch(context.Background(), c, "format-disk", []byte(`{}`)); !errors.Is(err, ErrRefused) {
		t.Fatalf("unknown op: %v", err)
	}
	if _, err := dispatch(context.Background(), c, "ensure-state-dirs", []byte(`{"dirs":["x"],"extra":1}`)); !errors.Is(err, ErrRefused) {
		t.Fatalf("unknown field: %v", err)
	}
}

// TestInProcessEnsureStateDirs runs the first op in-process as root.
func TestInProcessEnsureStateDirs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the in-process seam only runs as root")
	}
	root := t.TempDir()
	cl := New(Options{Roots: []string{root}})
	if cl.Mode() != "in-process" {
		t.Fatalf("mode = %s, want in-process as root", cl.Mode())
	}
	dir := filepath.Join(root, "vms", "x")
	if err := cl.EnsureStateDirs(context.Background(), dir); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("stat %s: %v %v", dir, fi, err)
	}
	if err := cl.EnsureStateDirs(context.Background(), "/etc/banger-must-not-exist"); !errors.Is(err, ErrRefused) {
		t.Fatalf("outside path: %v, want ErrRefused", err)
	}
	if _, err := os.Stat("/etc/banger-must-not-exist"); err == nil {
		t.Fatal("refused op still created the directory")
	}
	err = cl.call(context.Background(), "delete-tap", map[string]string{"name": "eth0"}, nil)
	if !errors.Is(err, ErrRefused) {
		t.Fatalf("foreign interface: %v, want ErrRefused", err)
	}
}
