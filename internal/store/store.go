// Package store is banger's SQLite state: embedded, versioned migrations,
// images, VMs and their allocations (IP, vsock CID, MAC, tap).
//
// Every connection of the pool gets the same profile from the DSN (WAL, busy
// timeout, foreign keys, synchronous=NORMAL). Mutations are serialized by one
// write mutex in the Store; reads run concurrently without it.
package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

var (
	// ErrNotFound is wrapped by every error about a VM or image that does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict is wrapped by unique violations (name taken, allocation
	// taken) and foreign-key violations (image in use).
	ErrConflict = errors.New("conflict")
)

// BusyTimeout is how long a connection waits for a lock held by another
// connection before failing with SQLITE_BUSY.
const BusyTimeout = 5 * time.Second

// Store is the SQLite store. It is safe for concurrent use.
type Store struct {
	db *sql.DB
	// mu serializes every mutation; reads do not take it.
	mu sync.Mutex
	// gen counts writes; the VM list cache is valid for one generation.
	gen     atomic.Uint64
	cacheMu sync.Mutex
	cache   []VM
	cacheAt uint64
	cached  bool
	// now is the clock used for created/updated timestamps.
	now func() time.Time
	// writeHook, when set, runs before every write (SetWriteHook).
	writeHook atomic.Pointer[func() error]
}

// Open opens (creating if needed) the database at path, creating its parent
// directory with mode 0700, and applies any pending migrations.
func Open(ctx context.Context, path string) (*Store, error) {
	if path == "" {
		return nil, errors.New("opening store: empty database path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("opening store %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
		return nil, fmt.Errorf("creating store directory for %s: %w", abs, err)
	}
	// Create the file ourselves so it is 0600 from the start; SQLite gives the
	// -wal and -shm files the mode of the database file.
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("creating store file %s: %w", abs, err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("creating store file %s: %w", abs, err)
	}

	db, err := sql.Open("sqlite", DSN(abs))
	if err != nil {
		return nil, fmt.Errorf("opening store %s: %w", abs, err)
	}
	db.SetMaxIdleConns(4)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("opening store %s: %w", abs, err)
	}
	if err := migrate(ctx, db, migrationFiles); err != nil {
		db.Close()
		return nil, fmt.Errorf("migrating store %s: %w", abs, err)
	}
	return &Store{db: db, now: time.Now}, nil
}

// DSN is the data source name for the database file at path (absolute). The
// connection profile is in it so that database/sql applies it to every
// connection it opens, not only the first. Write transactions begin
// IMMEDIATE so that they take the write lock up front instead of failing to
// upgrade a read snapshot.
func DSN(path string) string {
	u := url.URL{Scheme: "file", OmitHost: true, Path: path}
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", BusyTimeout.Milliseconds()))
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Set("_txlock", "immediate")
	u.RawQuery = q.Encode()
	return u.String()
}

// calm is the context a read passes to SQLite: ctx without its
// cancellation, unless ctx is already done (then the call is refused
// before it begins). Given a context that can be cancelled, database/sql
// and the driver each start a goroutine per statement and per result set
// to watch it, and the daemon's stats sampling, forward polls and VM
// operations run thousands of statements a second with 500 VMs: 137,000
// goroutines over BenchmarkDaemon500Running's half a minute, a few
// hundred alive at once on 2 cores (the runtime keeps a record, and a
// stack, of as many as were ever alive at once). Every statement here
// takes microseconds, so there is nothing worth cutting short.
func calm(ctx context.Context) context.Context {
	if ctx.Err() != nil {
		return ctx
	}
	return context.WithoutCancel(ctx)
}

// lockWrite takes the write mutex; its release marks the VM list cache stale.
func (s *Store) lockWrite() func() {
	s.mu.Lock()
	return func() {
		s.gen.Add(1)
		s.mu.Unlock()
	}
}

// Close closes the database.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("closing store: %w", err)
	}
	return nil
}

// DB is the underlying pool, for tests and diagnostics. Writing through it
// bypasses the write mutex.
func (s *Store) DB() *sql.DB { return s.db }

// NewID returns 10 random lowercase hex characters.
func NewID() string {
	var b [5]byte
	// crypto/rand.Read never returns an error (it crashes the program instead).
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// ValidID reports whether id is 10 lowercase hex characters, as NewID makes.
func ValidID(id string) bool { return validID(id) }

// validID reports whether id is 10 lowercase hex characters.
func validID(id string) bool {
	if len(id) != 10 {
		return false
	}
	for _, c := range id {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// kindError is an error with a message of its own that still matches a
// sentinel with errors.Is, so users read "vm name "dev" is already taken"
// rather than a message ending in ": conflict".
type kindError struct {
	msg  string
	kind error
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.kind }

func conflictf(format string, args ...any) error {
	return &kindError{msg: fmt.Sprintf(format, args...), kind: ErrConflict}
}

func notFoundf(format string, args ...any) error {
	return &kindError{msg: fmt.Sprintf(format, args...), kind: ErrNotFound}
}

// constraint describes a SQLite constraint violation.
type constraint struct {
	foreignKey bool
	column     string // "vms.name" for a UNIQUE violation, "" otherwise
}

// asConstraint reports whether err is a SQLite constraint violation.
func asConstraint(err error) (constraint, bool) {
	var se *sqlite.Error
	if !errors.As(err, &se) || se.Code()&0xff != sqlite3.SQLITE_CONSTRAINT {
		return constraint{}, false
	}
	msg := se.Error()
	// ON DELETE RESTRICT reports SQLITE_CONSTRAINT_TRIGGER, not
	// SQLITE_CONSTRAINT_FOREIGNKEY, so the message is checked too.
	c := constraint{foreignKey: se.Code() == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY ||
		strings.Contains(msg, "FOREIGN KEY constraint failed")}
	const marker = "UNIQUE constraint failed: "
	if i := strings.Index(msg, marker); i >= 0 {
		rest := msg[i+len(marker):]
		if j := strings.IndexAny(rest, " ,)"); j >= 0 {
			rest = rest[:j]
		}
		c.column = rest
	}
	return c, true
}

// timeToNanos converts t for storage; the zero time is stored as NULL.
func timeToNanos(t time.Time) (sql.NullInt64, error) {
	if t.IsZero() {
		return sql.NullInt64{}, nil
	}
	if t.Before(time.Unix(0, math.MinInt64)) || t.After(time.Unix(0, math.MaxInt64)) {
		return sql.NullInt64{}, fmt.Errorf("time %s is outside the storable range", t.Format(time.RFC3339Nano))
	}
	return sql.NullInt64{Int64: t.UnixNano(), Valid: true}, nil
}

// nanosToTime is the inverse of timeToNanos; times come back in UTC.
func nanosToTime(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return time.Unix(0, n.Int64).UTC()
}
