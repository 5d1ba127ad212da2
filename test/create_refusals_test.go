//go:build system

package test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCreateRefusedBeforeAllocation: sizes the storage would refuse (an
// unaligned disk, a work disk smaller than the image's /root seed) are
// usage errors (exit 2) answered before any VM row, directory or disk is
// made, and the daemon does not log them as errors.
func TestCreateRefusedBeforeAllocation(t *testing.T) {
	e := newEnv(t, "")
	e.registerImage()
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"unaligned disk", []string{"vm", "create", "odd", "--disk-size", "33554433"}, "disk size 33554433 bytes is not a multiple of 4 KiB; use --disk-size 32772KiB"},
		{"unaligned work disk", []string{"vm", "create", "odd", "--work-disk-size", "67108865"}, "work disk size 67108865 bytes is not a multiple of 4 KiB"},
		{"work disk below seed", []string{"vm", "create", "tiny", "--work-disk-size", "1M"}, "work disk size 1 MiB is smaller than image debian's /root"},
	}
	for _, c := range cases {
		_, errOut, code := e.banger(c.args...)
		if code != 2 || !strings.Contains(errOut, c.want) || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
			t.Errorf("%s: exit %d stderr %q, want exit 2 with one line containing %q", c.name, code, errOut, c.want)
		}
	}
	if vms := e.vms(); len(vms) != 0 {
		t.Fatalf("refused creates left VMs: %+v", vms)
	}
	if ents, _ := os.ReadDir(filepath.Join(e.state, "vms")); len(ents) != 0 {
		t.Fatalf("refused creates left VM directories: %v", ents)
	}
	if log, _ := os.ReadFile(filepath.Join(e.state, "bangerd.log")); strings.Contains(string(log), "level=ERROR") {
		t.Fatalf("refusals logged as errors:\n%s", e.daemonLogTail())
	}
}
