package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestForgetHostKeys runs forgetHostKeys on a fixture whose lines end in a
// comment saying whether forgetting dev must drop or keep them; the hashed
// lines were written by `ssh-keygen -H`.
func TestForgetHostKeys(t *testing.T) {
	fixture, err := os.ReadFile(filepath.Join("testdata", "known_hosts"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(path, fixture, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := forgetHostKeys(path, "dev", "dev.vm", "172.16.0.5"); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var want strings.Builder
	for _, line := range strings.SplitAfter(string(fixture), "\n") {
		if !strings.Contains(line, " drop-") {
			want.WriteString(line)
		}
	}
	if string(got) != want.String() {
		t.Fatalf("after forgetting dev:\n%s\nwant:\n%s", got, want.String())
	}
	if strings.Count(string(fixture), " drop-") != 9 || strings.Count(string(got), " keep-") != 7 {
		t.Fatalf("fixture changed: %d drop lines, %d keep lines left", strings.Count(string(fixture), " drop-"), strings.Count(string(got), " keep-"))
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v, want 0640 kept", st.Mode().Perm())
	}
	ents, _ := os.ReadDir(filepath.Dir(path))
	if len(ents) != 1 {
		t.Fatalf("temp files left behind: %v", ents)
	}

	// A second pass finds nothing and leaves the file untouched.
	before, _ := os.Stat(path)
	if err := forgetHostKeys(path, "dev", "dev.vm", "172.16.0.5"); err != nil {
		t.Fatal(err)
	}
	after, _ := os.Stat(path)
	if !os.SameFile(before, after) {
		t.Fatal("second pass rewrote the file although nothing matched")
	}
}

func TestForgetHostKeysEdgeCases(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, path string)
		names []string
	}{
		{"missing file", func(*testing.T, string) {}, []string{"dev"}},
		{"empty file", func(t *testing.T, p string) { writeKnownHosts(t, p, "") }, []string{"dev"}},
		{"no names", func(t *testing.T, p string) { writeKnownHosts(t, p, "dev ssh-ed25519 AAAA\n") }, nil},
		{"blank names", func(t *testing.T, p string) { writeKnownHosts(t, p, "dev ssh-ed25519 AAAA\n") }, []string{"", " "}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "known_hosts")
			tt.setup(t, path)
			before, _ := os.ReadFile(path)
			if err := forgetHostKeys(path, tt.names...); err != nil {
				t.Fatal(err)
			}
			after, _ := os.ReadFile(path)
			if string(before) != string(after) {
				t.Fatalf("changed %q to %q", before, after)
			}
		})
	}

	t.Run("unreadable path", func(t *testing.T) {
		dir := t.TempDir() // a directory where the file should be
		err := forgetHostKeys(dir, "dev")
		if err == nil || !strings.Contains(err.Error(), "known hosts") {
			t.Fatalf("err = %v, want a known hosts error", err)
		}
	})
}

func writeKnownHosts(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}
