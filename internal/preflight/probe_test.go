package preflight

import (
	"os"
	"path/filepath"
	"testing"
)

// TestCleanProbes: probe files a killed check left are removed; other
// files, and directories named like probes, are not.
func TestCleanProbes(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{".doctor-123", ".doctor-abc", "banger.db", "doctor-1"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	os.Mkdir(filepath.Join(dir, ".doctor-dir"), 0o700)
	n, err := CleanProbes(dir)
	if err != nil || n != 2 {
		t.Fatalf("CleanProbes = %d, %v", n, err)
	}
	ents, _ := os.ReadDir(dir)
	var left []string
	for _, e := range ents {
		left = append(left, e.Name())
	}
	if len(left) != 3 {
		t.Fatalf("left %v, want .doctor-dir, banger.db, doctor-1", left)
	}
	if r := checkStateDir(dir); r.Status != Pass {
		t.Fatalf("state dir check: %+v", r)
	}
	if n, err := CleanProbes(dir); n != 0 || err != nil {
		t.Fatalf("second CleanProbes = %d, %v (the check left a probe?)", n, err)
	}
}
