package firecracker

import (
	"path/filepath"
	"testing"
)

func BenchmarkFindByAPISocket(b *testing.B) {
	for b.Loop() {
		if _, err := FindByAPISocket("/nonexistent/api.sock"); err != nil {
			b.Fatal(err)
		}
	}
}

// One PUT round trip (fresh connection each time) against an in-process
// server: the client's share of the daemon's create path.
func BenchmarkClientPut(b *testing.B) {
	sock := filepath.Join(b.TempDir(), "api.sock")
	f := newFakeAPI(b, sock, nil)
	c := NewClient(f.sock)
	for b.Loop() {
		if err := c.PutMachineConfig(b.Context(), MachineConfig{VCPUCount: 2, MemSizeMib: 512}); err != nil {
			b.Fatal(err)
		}
	}
}
