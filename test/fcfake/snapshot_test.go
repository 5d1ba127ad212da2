package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// snapshotted boots a fake, pauses it and writes a snapshot; it returns the
// state and memory paths.
func snapshotted(t *testing.T, env ...string) (snap, mem string) {
	p := startFC(t, fcOpts{env: env})
	p.boot(ptr("console=ttyS0 reboot=k"))
	snap, mem = filepath.Join(p.dir, "vm.snap"), filepath.Join(p.dir, "vm.mem")
	p.ok("PATCH", "/vm", `{"state":"Paused"}`)
	p.ok("PUT", "/snapshot/create", fmt.Sprintf(`{"snapshot_path":%q,"mem_file_path":%q}`, snap, mem))
	return snap, mem
}

func loadBody(snap, mem string) string {
	return fmt.Sprintf(`{"snapshot_path":%q,"mem_backend":{"backend_type":"File","backend_path":%q},"resume_vm":true}`, snap, mem)
}

// TestSnapshotFiles: the memory file is written whole (every page
// allocated, as Firecracker does), both files name the version.
func TestSnapshotFiles(t *testing.T) {
	snap, mem := snapshotted(t)
	var st unix.Stat_t
	if err := unix.Stat(mem, &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != 256<<20 || st.Blocks*512 < st.Size {
		t.Fatalf("memory file: size %d, allocated %d; want 256 MiB, all allocated", st.Size, st.Blocks*512)
	}
	state, _ := os.ReadFile(snap)
	head, _ := os.ReadFile(mem)
	if !strings.HasPrefix(string(state), "fcfake-snapshot v"+fcVersion+"\n") || !strings.HasPrefix(string(head[:64]), "fcfake-snapshot-mem v"+fcVersion) {
		t.Fatalf("headers: %q / %q", state[:40], head[:40])
	}
}

// TestSnapshotLoadChecks: another version's snapshot, a memory file that
// is not the snapshot's, and the switches, each fail the load fatally with
// Firecracker's wording.
func TestSnapshotLoadChecks(t *testing.T) {
	snap, mem := snapshotted(t)
	for _, c := range []struct {
		name string
		env  []string
		prep func(t *testing.T) (string, string)
		want string
	}{
		{"version mismatch", []string{"FCFAKE_VERSION=1.16.2"}, nil, "Snapshot version mismatch: the snapshot was created by Firecracker v1.16.1, this is Firecracker v1.16.2"},
		{"failed load switch", []string{"FCFAKE_FAIL_SNAPSHOT_LOAD=1"}, nil, "FCFAKE_FAIL_SNAPSHOT_LOAD"},
		{"short memory file", nil, func(t *testing.T) (string, string) {
			short := filepath.Join(t.TempDir(), "short.mem")
			os.WriteFile(short, []byte("x"), 0o644)
			return snap, short
		}, "the snapshot's guest memory is 268435456 bytes"},
		{"foreign memory file", nil, func(t *testing.T) (string, string) {
			other := filepath.Join(t.TempDir(), "other.mem")
			os.WriteFile(other, nil, 0o644)
			os.Truncate(other, 256<<20)
			return snap, other
		}, "does not hold this snapshot's guest memory"},
		{"damaged state", nil, func(t *testing.T) (string, string) {
			bad := filepath.Join(t.TempDir(), "bad.snap")
			os.WriteFile(bad, []byte("fcfake-snapshot v"+fcVersion+"\n{garbage"), 0o644)
			return bad, mem
		}, "Cannot deserialize the microVM state"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, m := snap, mem
			if c.prep != nil {
				s, m = c.prep(t)
			}
			q := startFC(t, fcOpts{env: c.env})
			q.fault("PUT", "/snapshot/load", loadBody(s, m), c.want)
			if st, ok := q.wait(3 * time.Second); !ok || st.ExitCode() != 1 {
				t.Fatalf("after a failed load: %v %v, want exit 1", st, ok)
			}
		})
	}
	// The original loads.
	q := startFC(t, fcOpts{})
	q.ok("PUT", "/snapshot/load", loadBody(snap, mem))
	if got := q.instanceState(); got != "Running" {
		t.Fatalf("state after load: %q", got)
	}
}

// TestSnapshotCreateFails: the switch fails the create with a 400; the VM
// stays paused and can be resumed.
func TestSnapshotCreateFails(t *testing.T) {
	p := startFC(t, fcOpts{env: []string{"FCFAKE_FAIL_SNAPSHOT_CREATE=1"}})
	p.boot(nil)
	p.ok("PATCH", "/vm", `{"state":"Paused"}`)
	p.fault("PUT", "/snapshot/create", fmt.Sprintf(`{"snapshot_path":%q,"mem_file_path":%q}`, filepath.Join(p.dir, "s"), filepath.Join(p.dir, "m")), "Create snapshot error: Cannot save the microVM state")
	if got := p.instanceState(); got != "Paused" {
		t.Fatalf("state after a failed create: %q", got)
	}
	p.ok("PATCH", "/vm", `{"state":"Resumed"}`)
	if r := p.do("GET", "/version", ""); !strings.Contains(string(r.body), fcVersion) {
		t.Fatalf("GET /version: %s", r.body)
	}
}
