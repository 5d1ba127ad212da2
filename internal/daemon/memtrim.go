package daemon

import (
	"context"
	"encoding/json"
	"maps"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"banger/internal/api"
	"banger/internal/store"
)

// Handing memory back after a burst. A daemon that has just run 500 VMs'
// worth of operations holds more than a fresh one over the same VMs, in
// three places (BenchmarkDaemon500Running's memory reports, docs/design.md
// §4 "Memory after a burst"):
//
//   - Go heap the runtime keeps once it is garbage: an idle daemon
//     allocates nothing, so no collection would run for minutes.
//     debug.FreeOSMemory collects and returns it.
//   - OS threads. Every goroutine blocked in a system call holds a thread,
//     so a burst of creates or stops leaves dozens; the runtime never ends
//     an idle one, and each keeps 48 KiB of stacks (16 KiB g0, 32 KiB for
//     signals). A goroutine that exits with its thread locked takes the
//     thread with it (runtime.LockOSThread), which is how shedThreads ends
//     the idle ones.
//   - SQLite's C heap (modernc.org/libc, outside the Go heap). Each pooled
//     connection has its own page cache, and the allocator keeps a freed
//     region for reuse. So the pool is capped (storeMaxConns: writes are
//     serialized by the store anyway, reads take microseconds) and its idle
//     connections are closed once the burst is over.

const (
	// trimAfter is how long after the last VM operation or VM exit the
	// daemon trims; trimMaxDelay bounds how long a steady stream of
	// operations can put it off.
	trimAfter    = 2 * time.Second
	trimMaxDelay = 10 * time.Second

	// storeMaxConns caps the store's connection pool; storeIdleConns is how
	// many stay open between calls. Equal, so a burst never opens and
	// closes connections (each open parses the schema again). Neither a
	// write (it holds one connection, under the store's write mutex) nor a
	// read (it reads its rows and returns) ever waits for a second
	// connection while holding one, so the cap cannot deadlock.
	storeMaxConns  = 4
	storeIdleConns = 4
)

// keepThreads is how many OS threads shedThreads leaves: one per P, and
// sysmon, the main and template threads, the process watcher's epoll_wait
// and a spare.
func keepThreads() int { return runtime.GOMAXPROCS(0) + 5 }

// limitStore applies the daemon's connection policy to the store's pool.
func limitStore(st *store.Store) {
	db := st.DB()
	db.SetMaxOpenConns(storeMaxConns)
	db.SetMaxIdleConns(storeIdleConns)
}

// resized is a copy of m sized for what it holds now: a Go map keeps the
// room it once grew to, so the daemon's per-VM tables, grown to 500
// running VMs, would hold that room after they all stopped.
func resized[K comparable, V any](m map[K]V) map[K]V {
	out := make(map[K]V, len(m))
	maps.Copy(out, m)
	return out
}

// compactTables rebuilds the daemon's per-VM tables at their present size.
func (d *Daemon) compactTables() {
	d.vms.mu.Lock()
	d.vms.procs = resized(d.vms.procs)
	d.vms.mu.Unlock()
	d.vms.w.Compact()
	d.stats.mu.Lock()
	d.stats.samples, d.stats.active = resized(d.stats.samples), resized(d.stats.active)
	d.stats.mu.Unlock()
	d.locks.mu.Lock()
	d.locks.locks = resized(d.locks.locks)
	d.locks.mu.Unlock()
	d.fwd.compact()
	if d.net.records != nil {
		d.net.records.Compact()
	}
}

// trimMemory hands back what a burst of VM operations left behind: idle
// OS threads, idle store connections, and garbage.
func trimMemory(st *store.Store, keep int) (shed int) {
	shed = shedThreads(keep)
	db := st.DB()
	db.SetMaxIdleConns(0) // closes the idle ones
	db.SetMaxIdleConns(storeIdleConns)
	debug.FreeOSMemory()
	return shed
}

// shedThreads ends idle OS threads until at most keep remain, and returns
// how many it ended. Each round starts a goroutine that locks the thread
// it runs on and exits, which ends that thread; the scheduler hands the
// thread's P to an idle one. A round can end none: on the main thread the
// runtime parks it for good instead (it was idle anyway), and with no
// idle thread left the scheduler makes a new one. So it stops after a few
// rounds in a row that ended nothing, and after a bounded number in all.
func shedThreads(keep int) int {
	n := osThreads()
	start := n
	for rounds, misses := 0, 0; n > keep && rounds < 2*start && misses < 3; rounds++ {
		done := make(chan struct{})
		go func() {
			runtime.LockOSThread()
			close(done)
			// Returning while locked ends this thread.
		}()
		<-done
		// The thread ends a moment after done closes; wait for it to
		// drop out of the count before the next round.
		deadline := time.Now().Add(100 * time.Millisecond)
		next := osThreads()
		for next >= n && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
			next = osThreads()
		}
		if next >= n {
			misses++
			continue
		}
		misses = 0
		n = next
	}
	return start - n
}

// osThreads is the process's number of threads (/proc/self/status), or 0
// when it cannot be read (shedThreads then does nothing).
func osThreads() int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Threads:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

// readOnly are the calls that change nothing and so do not ask for a trim
// (a TUI polling vm.list would otherwise keep putting it off).
var readOnly = map[string]bool{
	api.MethodDaemonStatus: true,
	api.MethodVMList:       true,
	api.MethodVMGet:        true,
	api.MethodVMHealth:     true,
	api.MethodVMStats:      true,
	api.MethodVMTouch:      true,
	api.MethodVMPorts:      true,
	api.MethodImageList:    true,
}

// withTrim has every call but the read-only ones schedule the memory trim
// when it returns: a burst of creates allocates as much as one of stops.
func (d *Daemon) withTrim(m map[string]handler) map[string]handler {
	for method, h := range m {
		if readOnly[method] {
			continue
		}
		m[method] = func(ctx context.Context, raw json.RawMessage) (any, error) {
			defer d.vms.trimSoon()
			return h(ctx, raw)
		}
	}
	return m
}
