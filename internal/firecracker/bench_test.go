package firecracker

import "testing"

func BenchmarkFindByAPISocket(b *testing.B) {
	for b.Loop() {
		if _, err := FindByAPISocket("/nonexistent/api.sock"); err != nil {
			b.Fatal(err)
		}
	}
}
