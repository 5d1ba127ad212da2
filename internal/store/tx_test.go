package store

import (
	"context"
	"errors"
	"runtime/metrics"
	"testing"
)

// goroutinesCreated is how many goroutines the process has started.
func goroutinesCreated() uint64 {
	s := []metrics.Sample{{Name: "/sched/goroutines-created:goroutines"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// TestCallsStartNoGoroutines: reads and writes under a context that can
// be cancelled start no goroutine to watch it (database/sql and the
// driver each start one per statement, result set and transaction for
// such a context, thousands a second in a busy daemon).
func TestCallsStartNoGoroutines(t *testing.T) {
	s := openTest(t)
	img := mustImage(t, s, "debian")
	vm := mustVM(t, s, img, "a")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	before := goroutinesCreated()
	for i := 0; i < 50; i++ {
		if _, err := s.GetVM(ctx, vm.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := s.listVMs(ctx); err != nil {
			t.Fatal(err)
		}
		if err := s.SetState(ctx, vm.ID, StateStopped, ""); err != nil {
			t.Fatal(err)
		}
	}
	// 150 calls; a goroutine per call or per statement would be 150 or more.
	if n := goroutinesCreated() - before; n > 10 {
		t.Fatalf("150 store calls started %d goroutines", n)
	}
}

// TestWriteOnceBegunFinishes: a caller's context that ends during a write
// does not cut it short (a state change and its intent go together), and
// one already done refuses the write before anything is written.
func TestWriteOnceBegunFinishes(t *testing.T) {
	s := openTest(t)
	img := mustImage(t, s, "debian")
	vm := mustVM(t, s, img, "a")
	ctx, cancel := context.WithCancel(context.Background())
	err := s.Write(ctx, func(tx *Tx) error {
		cancel()
		vm.State = StateRunning
		return tx.UpdateVM(&vm)
	})
	if err != nil {
		t.Fatalf("write whose caller went away during it: %v", err)
	}
	got, err := s.GetVM(context.Background(), vm.ID)
	if err != nil || got.State != StateRunning {
		t.Fatalf("after the write: %+v, %v", got, err)
	}
	ran := false
	err = s.Write(ctx, func(*Tx) error { ran = true; return nil })
	if !errors.Is(err, context.Canceled) || ran {
		t.Fatalf("write under a done context: ran %v, err %v", ran, err)
	}
	if _, err := s.GetVM(ctx, vm.ID); !errors.Is(err, context.Canceled) {
		t.Fatalf("read under a done context: %v", err)
	}
}

// TestWriteRollsBack: a failing or panicking write leaves nothing behind,
// and its connection goes back to the pool outside any transaction.
func TestWriteRollsBack(t *testing.T) {
	s := openTest(t)
	s.DB().SetMaxOpenConns(1) // every write below gets the same connection
	img := mustImage(t, s, "debian")
	ctx := context.Background()
	boom := errors.New("boom")
	err := s.Write(ctx, func(tx *Tx) error {
		v := newVM(img, "x")
		if err := tx.CreateVM(&v, lowestFree); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("failing write: %v", err)
	}
	func() {
		defer func() { _ = recover() }()
		_ = s.Write(ctx, func(tx *Tx) error {
			v := newVM(img, "y")
			if err := tx.CreateVM(&v, lowestFree); err != nil {
				return err
			}
			panic("write panicked")
		})
	}()
	if vms, err := s.listVMs(ctx); err != nil || len(vms) != 0 {
		t.Fatalf("after the failed writes: %+v, %v", vms, err)
	}
	mustVM(t, s, img, "z") // the connection is usable, not inside a transaction
	if vms, err := s.listVMs(ctx); err != nil || len(vms) != 1 {
		t.Fatalf("after a good write: %+v, %v", vms, err)
	}
}
