package hostops

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestCheckPath(t *testing.T) {
	root := t.TempDir()
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(root, "escape")); err != nil {
		t.Fatal(err)
	}
	c := Caller{Roots: []string{root}}
	tests := []struct {
		name string
		path string
		ok   bool
	}{
		{"inside", filepath.Join(root, "vms", "abc"), true},
		{"root itself", root, false},
		{"relative", "vms/abc", false},
		{"dotdot", filepath.Join(root, "..", filepath.Base(outside)), false},
		{"symlink out", filepath.Join(root, "escape", "x"), false},
		{"etc", "/etc/passwd", false},
		{"empty", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.CheckPath(tt.path)
			if tt.ok && err != nil {
				t.Fatalf("CheckPath(%q) = %v, want ok", tt.path, err)
			}
			if !tt.ok && !errors.Is(err, ErrRefused) {
				t.Fatalf("CheckPath(%q) = %v, want ErrRefused", tt.path, err)
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
