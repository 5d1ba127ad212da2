package daemon

import (
	"context"
	"fmt"
	"maps"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"banger/internal/store"
)

// A burst of goroutines each holding a thread leaves the threads idle
// once it is over; shedThreads ends them.
func TestShedThreadsEndsIdleThreads(t *testing.T) {
	base := osThreads()
	if base == 0 {
		t.Skip("needs /proc/self/status")
	}
	const burst = 40
	var wg sync.WaitGroup
	release := make(chan struct{})
	for range burst {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A locked goroutine that blocks keeps its thread, so the
			// runtime starts another for the rest: one thread each.
			runtime.LockOSThread()
			<-release
			runtime.UnlockOSThread() // the thread stays, idle
		}()
	}
	deadline := time.Now().Add(20 * time.Second)
	for osThreads() < base+burst/2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	close(release)
	wg.Wait()
	peak := osThreads()
	if peak < base+burst/2 {
		t.Fatalf("the burst made %d threads (from %d), want at least %d more", peak, base, burst/2)
	}
	shed := shedThreads(base)
	after := osThreads()
	t.Logf("threads: %d before the burst, %d after it, %d after shedThreads (it ended %d)", base, peak, after, shed)
	if after > base+2 || shed < peak-base-2 {
		t.Errorf("shedThreads(%d) left %d threads of %d (ended %d), want at most %d", base, after, peak, shed, base+2)
	}
	// What remains still runs goroutines, on threads made anew as needed.
	done := make(chan struct{})
	go func() { close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("no goroutine ran after shedThreads")
	}
}

// A burst of trimSoon calls costs one trim, run after the burst.
func TestTrimSoonOncePerBurst(t *testing.T) {
	var n atomic.Int32
	r, err := newRuntimeState(func() { n.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	defer r.close()
	for range 20 {
		r.trimSoon()
	}
	if got := n.Load(); got != 0 {
		t.Fatalf("%d trims during the burst, want none until it is over", got)
	}
	deadline := time.Now().Add(trimAfter + 20*time.Second)
	for n.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(trimAfter + 500*time.Millisecond) // a second one would have run by now
	if got := n.Load(); got != 1 {
		t.Fatalf("%d trims after one burst, want 1", got)
	}
	// The next burst gets its own.
	r.trimSoon()
	for n.Load() == 1 && time.Now().Before(deadline.Add(trimAfter)) {
		time.Sleep(50 * time.Millisecond)
	}
	if got := n.Load(); got != 2 {
		t.Fatalf("%d trims after two bursts, want 2", got)
	}
	// Once closed, nothing more is scheduled.
	r.close()
	r.trimSoon()
	time.Sleep(trimAfter + 500*time.Millisecond)
	if got := n.Load(); got != 2 {
		t.Fatalf("a trim ran after close (%d)", got)
	}
}

// The store's pool is capped, and the trim closes its idle connections.
func TestTrimClosesIdleStoreConnections(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	limitStore(st)
	db := st.DB()
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := st.ListVMs(ctx); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	s := db.Stats()
	if s.MaxOpenConnections != storeMaxConns || s.OpenConnections > storeMaxConns {
		t.Errorf("pool: %+v, want at most %d connections", s, storeMaxConns)
	}
	trimMemory(st, runtime.NumCPU()+100)
	if s := db.Stats(); s.OpenConnections != 0 {
		t.Errorf("after the trim %d connections are open, want none", s.OpenConnections)
	}
	if _, err := st.ListVMs(ctx); err != nil {
		t.Fatalf("the store after the trim: %v", err)
	}
}

// The start-up reconcile reads every VM: it is trimmed after like any burst.
func TestStartupReconcileSchedulesTrim(t *testing.T) {
	r := newRig(t, nil)
	r.start()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r.d.vms.mu.Lock()
		scheduled := r.d.vms.trim != nil
		r.d.vms.mu.Unlock()
		if scheduled {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no memory trim scheduled after the start-up reconcile")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A periodic reconcile over VMs reads and checks every one of them: it asks
// for a trim when it is done.
func TestReconcileSchedulesTrim(t *testing.T) {
	r := newRig(t, nil)
	r.start()
	r.registerImage()
	r.create("trimmed")
	pending := func() bool {
		r.d.vms.mu.Lock()
		defer r.d.vms.mu.Unlock()
		return r.d.vms.trimPending
	}
	// Wait out the trims the start-up and the create asked for.
	deadline := time.Now().Add(trimMaxDelay + 20*time.Second)
	for pending() {
		if time.Now().After(deadline) {
			t.Fatal("the create's trim never ran")
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.d.reconcile(context.Background())
	if !pending() {
		t.Fatal("no memory trim scheduled after a reconcile over one vm")
	}
}

// TestResized: the rebuilt table holds exactly what the old one did and is
// its own.
func TestResized(t *testing.T) {
	m := map[string]int{}
	for i := 0; i < 1000; i++ {
		m[fmt.Sprint(i)] = i
	}
	for i := 10; i < 1000; i++ {
		delete(m, fmt.Sprint(i))
	}
	r := resized(m)
	if !maps.Equal(r, m) {
		t.Fatalf("resized %v, want %v", r, m)
	}
	r["x"] = 1
	if _, ok := m["x"]; ok {
		t.Fatal("the rebuilt map shares the old one's storage")
	}
}
