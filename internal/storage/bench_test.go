package storage

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"banger/internal/hostops"
)

// Benchmarks of the copy driver and work-disk seeding on a 2 GiB image
// holding ~600 MiB of random data (root; see testdata/bench.sh).

func benchImage(b *testing.B, root string) string {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Skip("needs root: the image tree has root-owned files")
	}
	tree := filepath.Join(root, "tree")
	data := filepath.Join(tree, "usr", "share", "bench")
	if err := os.MkdirAll(data, 0o755); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 10<<20)
	for i := 0; i < 60; i++ {
		if _, err := rand.Read(buf); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(data, fmt.Sprintf("blob%02d", i)), buf, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	home := filepath.Join(tree, "root")
	if err := os.MkdirAll(filepath.Join(home, ".ssh"), 0o700); err != nil {
		b.Fatal(err)
	}
	for name, body := range map[string]string{".bashrc": "PS1='# '\n", ".profile": ". ~/.bashrc\n", ".ssh/authorized_keys": "ssh-ed25519 AAAA bench\n"} {
		if err := os.WriteFile(filepath.Join(home, name), []byte(body), 0o600); err != nil {
			b.Fatal(err)
		}
	}
	if err := os.Chmod(home, 0o700); err != nil {
		b.Fatal(err)
	}
	img := filepath.Join(root, "image.ext4")
	if _, err := hostops.Run(context.Background(), "mkfs.ext4", "-q", "-F", "-d", tree, img, "2G"); err != nil {
		b.Fatal(err)
	}
	os.RemoveAll(tree)
	return img
}

func benchManager(b *testing.B, root string) *Manager {
	b.Helper()
	m, err := New(Options{Driver: DriverCopy, Host: hostops.New(hostops.Options{Roots: []string{root}}), SeedDir: filepath.Join(root, "seeds")})
	if err != nil {
		b.Fatal(err)
	}
	return m
}

// BenchmarkCopyRoot: a VM root disk with the copy driver. "uncached" grows
// every copy (sparse copy of the image, extend to 8 GiB, e2fsck -f,
// resize2fs: the fsync forces the copy's writeback); "cached" copies the
// image grown once (grown.go); "cp" is `cp --sparse=always` of the image,
// the reference. Run: go test -run '^$' -bench CopyRoot -benchtime 5x ./internal/storage/
func BenchmarkCopyRoot(b *testing.B) {
	root := b.TempDir()
	img := benchImage(b, root)
	m := benchManager(b, root)
	ctx := context.Background()
	for _, mode := range []string{"uncached", "cached", "cp"} {
		b.Run(mode, func(b *testing.B) {
			imageID := map[string]string{"cached": "bench"}[mode]
			if mode == "cached" { // built outside the timing
				if _, _, err := m.grownRoot(ctx, imageID, img, 8<<30); err != nil {
					b.Fatal(err)
				}
			}
			for i := 0; i < b.N; i++ {
				dir := filepath.Join(root, fmt.Sprintf("vm-%s-%d", mode, i))
				if err := os.Mkdir(dir, 0o700); err != nil {
					b.Fatal(err)
				}
				if mode == "cp" {
					if _, err := hostops.Run(ctx, "cp", "--sparse=always", img, filepath.Join(dir, "root.ext4")); err != nil {
						b.Fatal(err)
					}
				} else if _, _, err := m.CreateRoot(ctx, Disk{VMID: fmt.Sprintf("bench%d", i), VMDir: dir, ImagePath: img, ImageID: imageID, DiskBytes: 8 << 30}); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				os.RemoveAll(dir) // keep the page cache and the disk from filling up
				b.StartTimer()
			}
		})
	}
}

// BenchmarkWorkDisk: a 16 GiB work disk; "cold" builds the image's seed
// (privileged rdump + mkfs.ext4 -d) first, "cached" reuses it.
func BenchmarkWorkDisk(b *testing.B) {
	root := b.TempDir()
	img := benchImage(b, root)
	ctx := context.Background()
	for _, cached := range []bool{false, true} {
		name := map[bool]string{false: "cold", true: "cached"}[cached]
		b.Run(name, func(b *testing.B) {
			m := benchManager(b, root)
			for i := 0; i < b.N; i++ {
				out := filepath.Join(root, fmt.Sprintf("work-%s-%d.ext4", name, i))
				if !cached {
					b.StopTimer()
					os.RemoveAll(filepath.Join(root, "seeds"))
					b.StartTimer()
				}
				if err := m.CreateWorkDisk(ctx, "bench", img, out, 16<<30); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				os.Remove(out)
				b.StartTimer()
			}
		})
	}
}
