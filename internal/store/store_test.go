package store

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// openTest opens a fresh store in a temp dir and closes it at cleanup.
func openTest(t testing.TB) *Store {
	t.Helper()
	s, err := Open(context.Background(), filepath.Join(t.TempDir(), "state", "banger.db"))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// mustImage creates an image named name.
func mustImage(t testing.TB, s *Store, name string) Image {
	t.Helper()
	img := Image{Name: name, RootfsPath: "/state/images/" + name + "/rootfs.ext4", Source: SourceBuilt}
	if err := s.CreateImage(context.Background(), &img); err != nil {
		t.Fatalf("CreateImage(%s): %v", name, err)
	}
	return img
}

// lowestFree is the allocator the daemon is expected to supply: the lowest
// free host address of 172.16.0.0/24 after the gateway .1, the lowest free
// CID >= 3, and a MAC derived from the IP.
func lowestFree(u Used) (Allocation, error) {
	prefix := netip.MustParsePrefix("172.16.0.0/24")
	var a Allocation
	for ip := prefix.Addr().Next().Next(); prefix.Contains(ip); ip = ip.Next() {
		if ip == netip.MustParseAddr("172.16.0.255") {
			break
		}
		if !u.IPs[ip] {
			a.IP = ip
			break
		}
	}
	if !a.IP.IsValid() {
		return Allocation{}, fmt.Errorf("no free address in %s", prefix)
	}
	for cid := uint32(3); ; cid++ {
		if !u.CIDs[cid] {
			a.CID = cid
			break
		}
	}
	b := a.IP.As4()
	a.MAC = fmt.Sprintf("02:fc:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3])
	return a, nil
}

func TestPoolProfileOnEveryConnection(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	img := mustImage(t, s, "debian")
	db := s.DB()
	db.SetMaxOpenConns(4)

	// Hold all four connections at once so each is a distinct connection.
	for i := range 4 {
		conn, err := db.Conn(ctx)
		if err != nil {
			t.Fatalf("conn %d: %v", i, err)
		}
		defer conn.Close()
		for _, p := range []struct {
			pragma string
			want   string
		}{
			{"journal_mode", "wal"},
			{"foreign_keys", "1"},
			{"busy_timeout", "5000"},
			{"synchronous", "1"}, // NORMAL
		} {
			var got string
			if err := conn.QueryRowContext(ctx, "PRAGMA "+p.pragma).Scan(&got); err != nil {
				t.Fatalf("conn %d: PRAGMA %s: %v", i, p.pragma, err)
			}
			if got != p.want {
				t.Errorf("conn %d: PRAGMA %s = %q, want %q", i, p.pragma, got, p.want)
			}
		}
		// The foreign key is enforced on this connection: a VM naming an
		// unknown image is rejected by SQLite itself.
		id := NewID()
		_, err = conn.ExecContext(ctx, `INSERT INTO vms (id, name, image_id, state, vcpu, memory_mib,
			disk_bytes, work_disk_bytes, ip, mac, tap, cid, created_at, updated_at)
			VALUES (?, ?, 'ffffffffff', 'created', 1, 512, 0, 0, ?, ?, ?, ?, 1, 1)`,
			id, "orphan"+id, fmt.Sprintf("10.0.0.%d", i+2), "mac"+id, "bgt-"+id, 100+i)
		c, ok := asConstraint(err)
		if !ok || !c.foreignKey {
			t.Errorf("conn %d: insert with unknown image: err = %v, want a foreign key violation", i, err)
		}
		// And a VM naming a real image is accepted, so the failure above was the key.
		_, err = conn.ExecContext(ctx, `INSERT INTO vms (id, name, image_id, state, vcpu, memory_mib,
			disk_bytes, work_disk_bytes, ip, mac, tap, cid, created_at, updated_at)
			VALUES (?, ?, ?, 'created', 1, 512, 0, 0, ?, ?, ?, ?, 1, 1)`,
			id, "ok"+id, img.ID, fmt.Sprintf("10.0.0.%d", i+2), "mac"+id, "bgt-"+id, 100+i)
		if err != nil {
			t.Errorf("conn %d: insert with known image: %v", i, err)
		}
	}
	if got := db.Stats().OpenConnections; got != 4 {
		t.Errorf("open connections = %d, want 4", got)
	}
}

func TestCreateVMUnknownImage(t *testing.T) {
	s := openTest(t)
	vm := VM{Name: "dev", ImageID: "0123456789", VCPU: 1, MemoryMiB: 512}
	err := s.CreateVM(context.Background(), &vm, lowestFree)
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "0123456789") {
		t.Fatalf("CreateVM with unknown image: err = %v, want ErrNotFound naming the image", err)
	}
	if vms, err := s.ListVMs(context.Background()); err != nil || len(vms) != 0 {
		t.Fatalf("ListVMs = %v, %v; want nothing written", vms, err)
	}
}

func TestOpenFileModesAndOddPath(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a dir?x=1#frag", "state")
	path := filepath.Join(dir, "banger.db")
	s, err := Open(context.Background(), path)
	if err != nil {
		t.Fatalf("Open(%q): %v", path, err)
	}
	defer s.Close()
	mustImage(t, s, "debian")
	for p, want := range map[string]os.FileMode{dir: 0o700 | os.ModeDir, path: 0o600} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("mode of %s = %v, want %v", p, fi.Mode(), want)
		}
	}
	// The database is the file at path itself, not a name SQLite made up
	// from a mangled URI.
	if entries, _ := os.ReadDir(dir); len(entries) == 0 {
		t.Fatalf("no files in %s", dir)
	}
	var file string
	if err := s.DB().QueryRow(`SELECT file FROM pragma_database_list WHERE name = 'main'`).Scan(&file); err != nil {
		t.Fatal(err)
	}
	if file != path {
		t.Errorf("database file = %q, want %q", file, path)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	notDir := filepath.Join(dir, "file")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path, want string
	}{
		{"empty path", "", "empty database path"},
		{"parent is a file", filepath.Join(notDir, "banger.db"), "creating store directory"},
		{"path is a directory", dir, dir},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(context.Background(), tc.path)
			if err == nil {
				s.Close()
				t.Fatalf("Open(%q) succeeded", tc.path)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Open(%q) = %v, want it to mention %q", tc.path, err, tc.want)
			}
		})
	}
}

func TestNewID(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := NewID()
		if !validID(id) {
			t.Fatalf("NewID() = %q, not 10 lowercase hex chars", id)
		}
		if seen[id] {
			t.Fatalf("NewID() repeated %q", id)
		}
		seen[id] = true
	}
	for _, bad := range []string{"", "012345678", "0123456789a", "ABCDEF0123", "g123456789"} {
		if validID(bad) {
			t.Errorf("validID(%q) = true", bad)
		}
	}
}

func TestTimeRoundTrip(t *testing.T) {
	for _, tc := range []time.Time{
		{},
		time.Date(2024, 2, 29, 23, 59, 59, 123456789, time.FixedZone("x", 3600)),
		time.Unix(0, 1),
	} {
		n, err := timeToNanos(tc)
		if err != nil {
			t.Fatalf("timeToNanos(%v): %v", tc, err)
		}
		if got := nanosToTime(n); !got.Equal(tc) || got.IsZero() != tc.IsZero() {
			t.Errorf("round trip of %v = %v", tc, got)
		}
	}
	if _, err := timeToNanos(time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)); err == nil {
		t.Error("timeToNanos(year 3000) succeeded")
	}
}
