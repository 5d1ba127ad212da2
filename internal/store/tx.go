package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Tx is one write transaction. Everything written through it commits
// together or not at all, so a state change and the intent that guards
// it (see Intent) are never recorded apart. A Tx is valid only inside the
// function given to Store.Write.
type Tx struct {
	ctx   context.Context
	tx    querier
	now   time.Time
	after []func() // applied to the caller's values once the commit succeeded
}

// querier is what a statement runs on: the pool, or the connection a
// write transaction holds.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Write runs fn in one transaction under the store's write mutex and
// commits when fn returns nil. The values fn passes to Tx methods are
// updated (IDs, timestamps) only after the commit succeeds.
//
// The transaction is BEGIN IMMEDIATE ... COMMIT on one connection of the
// pool rather than a database/sql Tx, which watches its context from a
// goroutine of its own and gives every result set read in it another
// (see calm).
func (s *Store) Write(ctx context.Context, fn func(*Tx) error) error {
	defer s.lockWrite()()
	if h := s.writeHook.Load(); h != nil {
		if err := (*h)(); err != nil {
			return fmt.Errorf("writing to the store: %w", err)
		}
	}
	conn, err := s.db.Conn(ctx) // a caller already gone is refused here
	if err != nil {
		return fmt.Errorf("beginning a store transaction: %w", err)
	}
	ctx = context.WithoutCancel(ctx)
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		conn.Close()
		return fmt.Errorf("beginning a store transaction: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			if _, rerr := conn.ExecContext(ctx, "ROLLBACK"); rerr != nil {
				// Never hand back a connection that may still be inside
				// a transaction: the pool drops a connection whose Raw
				// callback reports it bad.
				_ = conn.Raw(func(any) error { return driver.ErrBadConn })
			}
		}
		conn.Close()
	}()
	t := &Tx{ctx: ctx, tx: conn, now: s.now()}
	if err := fn(t); err != nil {
		return err
	}
	if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
		return fmt.Errorf("committing to the store: %w", err)
	}
	committed = true
	for _, f := range t.after {
		f()
	}
	return nil
}

// SetWriteHook installs fn to run before every write transaction; an error
// from it fails that write before anything is written. It exists so tests
// of the store's callers can make writes fail (a full disk, a read-only
// file) and check that nothing is left half-done. nil removes the hook.
func (s *Store) SetWriteHook(fn func() error) {
	if fn == nil {
		s.writeHook.Store(nil)
		return
	}
	s.writeHook.Store(&fn)
}

// ErrInjected is what FailWrites makes the failing writes return.
var ErrInjected = errors.New("injected store write failure")

// FailWrites makes writes fail from the skip+1-th on, n of them (n < 0:
// all), with ErrInjected: a write hook for tests. It returns a function
// that reports how many writes were attempted since.
func (s *Store) FailWrites(skip, n int) (attempts func() int) {
	var (
		mu    sync.Mutex
		count int
	)
	s.SetWriteHook(func() error {
		mu.Lock()
		defer mu.Unlock()
		count++
		if count > skip && (n < 0 || count <= skip+n) {
			return ErrInjected
		}
		return nil
	})
	return func() int {
		mu.Lock()
		defer mu.Unlock()
		return count
	}
}
