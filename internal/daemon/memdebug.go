package daemon

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"syscall"
	"time"
)

// memDebugEnv names a directory: when set, SIGUSR1 makes the daemon write
// a memory report there (runtime/metrics, smaps_rollup, a heap profile:
// empty unless memProfileRateEnv turns sampling on),
// for BenchmarkDaemon500Running to tell where resident memory sits. Unset,
// nothing is installed.
const memDebugEnv = "BANGERD_MEMDEBUG_DIR"

// memProfileRateEnv sets the heap profile's sampling rate (bytes per
// sample, runtime.MemProfileRate; 524288 is Go's default). Unset, the
// daemon samples nothing.
const memProfileRateEnv = "BANGERD_MEMPROFILERATE"

// setMemProfileRate turns heap profiling off unless memProfileRateEnv asks
// for it. Go samples allocations from the start by default, and nothing
// reads the daemon's profile but the memory report: each sampled call
// stack costs a bucket that is never freed and touches a page of a
// 1.4 MiB hash table, so a daemon that had run 500 VMs' creates and stops
// held 1.3 MiB more for profiling than a fresh one (docs/design.md §4
// "Memory after a burst"). It runs first thing in Main.
func setMemProfileRate() {
	rate := 0
	if r, err := strconv.Atoi(os.Getenv(memProfileRateEnv)); err == nil && r >= 0 {
		rate = r
	}
	runtime.MemProfileRate = rate
}

// startMemDebug installs the SIGUSR1 hook when memDebugEnv is set.
func startMemDebug(log *slog.Logger, d *Daemon) {
	dir := os.Getenv(memDebugEnv)
	if dir == "" {
		return
	}
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGUSR1)
	go func() {
		n := 0
		for range ch {
			n++
			if err := writeMemReport(dir, n, d); err != nil {
				log.Warn("writing memory report", "dir", dir, "err", err)
			}
		}
	}()
}

// writeMemReport writes mem-<n>.txt, goroutines-<n>.txt and
// heap-<n>.pprof into dir, the heap profile last.
func writeMemReport(dir string, n int, d *Daemon) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "time %s\n", time.Now().UTC().Format(time.RFC3339Nano))
	fmt.Fprintf(&b, "goroutines %d\n", runtime.NumGoroutine())
	db := d.store.DB().Stats()
	fmt.Fprintf(&b, "db-open %d\ndb-idle %d\ndb-in-use %d\ndb-max-idle-closed %d\ndb-max-lifetime-closed %d\ndb-wait-count %d\n",
		db.OpenConnections, db.Idle, db.InUse, db.MaxIdleClosed, db.MaxLifetimeClosed, db.WaitCount)
	d.vms.mu.Lock()
	fmt.Fprintf(&b, "procs %d\n", len(d.vms.procs))
	d.vms.mu.Unlock()
	fmt.Fprintf(&b, "watched %d\n", d.vms.w.Len())
	d.locks.mu.Lock()
	fmt.Fprintf(&b, "vm-locks %d\n", len(d.locks.locks))
	d.locks.mu.Unlock()
	d.events.mu.Lock()
	fmt.Fprintf(&b, "event-subs %d\n", len(d.events.subs))
	d.events.mu.Unlock()
	d.stats.mu.Lock()
	fmt.Fprintf(&b, "stats-samples %d\nstats-active %d\n", len(d.stats.samples), len(d.stats.active))
	d.stats.mu.Unlock()
	descs := metrics.All()
	samples := make([]metrics.Sample, len(descs))
	for i, d := range descs {
		samples[i].Name = d.Name
	}
	metrics.Read(samples)
	for _, s := range samples {
		switch s.Value.Kind() {
		case metrics.KindUint64:
			fmt.Fprintf(&b, "%s %d\n", s.Name, s.Value.Uint64())
		case metrics.KindFloat64:
			fmt.Fprintf(&b, "%s %g\n", s.Name, s.Value.Float64())
		}
	}
	for _, f := range []string{"/proc/self/smaps_rollup", "/proc/self/status"} {
		if raw, err := os.ReadFile(f); err == nil {
			fmt.Fprintf(&b, "--- %s\n%s", f, raw)
		}
	}
	if raw, err := os.ReadFile("/proc/self/smaps"); err == nil {
		fmt.Fprintf(&b, "--- /proc/self/smaps\n%s", raw)
	}
	if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("mem-%d.txt", n)), b.Bytes(), 0o600); err != nil {
		return err
	}
	var g bytes.Buffer
	if err := pprof.Lookup("goroutine").WriteTo(&g, 1); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("goroutines-%d.txt", n)), g.Bytes(), 0o600); err != nil {
		return err
	}
	// Written last: its appearance says the report is complete.
	f, err := os.Create(filepath.Join(dir, fmt.Sprintf("heap-%d.pprof.tmp", n)))
	if err != nil {
		return err
	}
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), filepath.Join(dir, fmt.Sprintf("heap-%d.pprof", n)))
}
