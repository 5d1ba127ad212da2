package store

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
)

func TestMigrateFromEmptyFileAndReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "banger.db")
	if err := os.WriteFile(path, nil, 0o600); err != nil { // an empty file, as a crash after create leaves
		t.Fatal(err)
	}
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatalf("Open on an empty file: %v", err)
	}
	v, err := s.Version(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v != SchemaVersion() || v < 1 {
		t.Fatalf("version after first open = %d, want %d", v, SchemaVersion())
	}
	img := mustImage(t, s, "debian")
	vm := mustVM(t, s, img, "dev")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(ctx, path)
	if err != nil {
		t.Fatalf("re-open: %v", err)
	}
	defer s.Close()
	if v2, err := s.Version(ctx); err != nil || v2 != v {
		t.Fatalf("version after re-open = %d, %v; want %d", v2, err, v)
	}
	got, err := s.GetVMByName(ctx, "dev")
	if err != nil {
		t.Fatalf("vm lost on re-open: %v", err)
	}
	if got.ID != vm.ID || got.IP != vm.IP || got.ImageID != img.ID {
		t.Errorf("vm after re-open = %+v, want %+v", got, vm)
	}
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "banger.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	newer := SchemaVersion() + 7
	if _, err := s.DB().ExecContext(ctx, "PRAGMA user_version = "+strconv.Itoa(newer)); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s, err = Open(ctx, path)
	if err == nil {
		s.Close()
		t.Fatal("Open of a newer schema succeeded")
	}
	for _, want := range []string{path, "schema version " + strconv.Itoa(newer), "supports (" + strconv.Itoa(SchemaVersion()) + ")", "upgrade banger"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func openRaw(t *testing.T) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", DSN(filepath.Join(t.TempDir(), "raw.db")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestMigrationIsAtomic(t *testing.T) {
	ctx := context.Background()
	db := openRaw(t)
	fsys := fstest.MapFS{
		"migrations/0001_a.sql": {Data: []byte("CREATE TABLE a (x INTEGER);")},
		"migrations/0002_b.sql": {Data: []byte("CREATE TABLE b (x INTEGER); INSERT INTO a VALUES (1); CREATE TABLE oops (;")},
	}
	err := migrate(ctx, db, fsys)
	if err == nil || !strings.Contains(err.Error(), "0002_b.sql") {
		t.Fatalf("migrate with a broken 0002: %v, want an error naming it", err)
	}
	if v, _ := userVersion(ctx, db); v != 1 {
		t.Errorf("version after failed 0002 = %d, want 1", v)
	}
	var n int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_schema WHERE name = 'b'`).Scan(&n); err != nil || n != 0 {
		t.Errorf("table b from the failed migration exists (n=%d, err=%v)", n, err)
	}
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM a`).Scan(&n); err != nil || n != 0 {
		t.Errorf("row inserted by the failed migration kept (n=%d, err=%v)", n, err)
	}

	// Fixed, it applies 0002 only.
	fsys["migrations/0002_b.sql"] = &fstest.MapFile{Data: []byte("CREATE TABLE b (x INTEGER); INSERT INTO a VALUES (1);")}
	if err := migrate(ctx, db, fsys); err != nil {
		t.Fatal(err)
	}
	if v, _ := userVersion(ctx, db); v != 2 {
		t.Errorf("version = %d, want 2", v)
	}
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM a`).Scan(&n); err != nil || n != 1 {
		t.Errorf("rows in a = %d (%v), want 1", n, err)
	}
	// Running again changes nothing.
	if err := migrate(ctx, db, fsys); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM a`).Scan(&n); err != nil || n != 1 {
		t.Errorf("rows in a after a second run = %d (%v), want 1", n, err)
	}
}

func TestLoadMigrationsRejectsBadSets(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files []string
		want  string
	}{
		{"none", nil, "no migrations"},
		{"gap", []string{"0001_a.sql", "0003_c.sql"}, "expected version 2"},
		{"duplicate", []string{"0001_a.sql", "0001_b.sql"}, "expected version 2"},
		{"bad name", []string{"init.sql"}, "NNNN_description.sql"},
		{"zero", []string{"0000_a.sql"}, "NNNN_description.sql"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fsys := fstest.MapFS{}
			for _, f := range tc.files {
				fsys["migrations/"+f] = &fstest.MapFile{Data: []byte("SELECT 1;")}
			}
			_, err := loadMigrations(fsys)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("loadMigrations(%v) = %v, want error mentioning %q", tc.files, err, tc.want)
			}
		})
	}
	// The embedded set itself is valid.
	if ms, err := loadMigrations(migrationFiles); err != nil || len(ms) == 0 {
		t.Fatalf("embedded migrations: %v", err)
	}
}

func TestConcurrentOpensMigrateOnce(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "banger.db")
	const n = 4
	stores := make([]*Store, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { stores[i], errs[i] = Open(ctx, path) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Errorf("Open %d: %v", i, errs[i])
			continue
		}
		if v, err := stores[i].Version(ctx); err != nil || v != SchemaVersion() {
			t.Errorf("store %d: version %d, %v", i, v, err)
		}
		stores[i].Close()
	}
}
