//go:build system

package test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// daemonProc reads one "Key:" line of the daemon's /proc status as a
// number (VmRSS is in kB).
func (e *env) daemonProc(key string) int {
	e.t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", e.daemonPID()))
	if err != nil {
		e.t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, key+":"); ok {
			n, _ := strconv.Atoi(strings.Fields(v)[0])
			return n
		}
	}
	e.t.Fatalf("no %s: line", key)
	return 0
}

// memReport has the daemon write its memory report (BANGERD_MEMDEBUG_DIR,
// SIGUSR1: runtime/metrics, smaps, goroutines, a heap profile, empty unless
// BANGERD_MEMPROFILERATE is set) and returns one line saying where its
// resident memory sits:
// anonymous vs file-backed pages, and of the Go runtime's memory the live
// heap, heap spans kept but unused, goroutine stacks, OS thread stacks and
// other runtime metadata. BANGER_BENCH_MEMDIR, when set, keeps the reports
// (with heap profiles) there under label.
func (e *env) memReport(dir, label string) string {
	e.t.Helper()
	pid := e.daemonPID()
	// Reports are numbered per daemon process (a restarted daemon starts
	// again at 1); the heap profile is written last, so a heap-<n>.pprof
	// not seen before means report n is complete.
	before := map[string]bool{}
	ents, _ := os.ReadDir(dir)
	for _, ent := range ents {
		before[ent.Name()] = true
	}
	if err := syscall.Kill(pid, syscall.SIGUSR1); err != nil {
		e.t.Fatal(err)
	}
	var num string
	deadline := time.Now().Add(30 * time.Second)
	for num == "" {
		if time.Now().After(deadline) {
			e.t.Fatalf("no memory report from pid %d in %s", pid, dir)
		}
		time.Sleep(100 * time.Millisecond)
		ents, _ := os.ReadDir(dir)
		for _, ent := range ents {
			if n, ok := strings.CutPrefix(ent.Name(), "heap-"); ok && !before[ent.Name()] && strings.HasSuffix(n, ".pprof") {
				num = strings.TrimSuffix(n, ".pprof")
			}
		}
	}
	files := []string{"mem-" + num + ".txt", "goroutines-" + num + ".txt", "heap-" + num + ".pprof"}
	raw, err := os.ReadFile(filepath.Join(dir, files[0]))
	if err != nil {
		e.t.Fatal(err)
	}
	keep := os.Getenv("BANGER_BENCH_MEMDIR")
	if keep != "" {
		_ = os.MkdirAll(keep, 0o755)
	}
	for _, f := range files {
		// Renamed so the reports of a restarted daemon do not collide.
		p := filepath.Join(dir, label+"-"+f)
		_ = os.Rename(filepath.Join(dir, f), p)
		if b, err := os.ReadFile(p); err == nil && keep != "" {
			_ = os.WriteFile(filepath.Join(keep, label+"-"+f), b, 0o644)
		}
	}
	v := map[string]float64{}
	for _, l := range strings.Split(string(raw), "\n") {
		f := strings.Fields(strings.TrimSuffix(l, " kB"))
		if len(f) < 2 {
			continue
		}
		x, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			continue
		}
		k := strings.TrimSuffix(f[0], ":")
		if _, seen := v[k]; !seen { // the rollup's lines come before the per-mapping ones
			v[k] = x
		}
	}
	mib := func(k string) float64 { return v[k] / (1 << 20) }
	kmib := func(k string) float64 { return v[k] / 1024 }
	return fmt.Sprintf("%s: rss %.1f MiB (anon %.1f, file %.1f) threads %.0f goroutines %.0f | go: heap live %.1f, heap free-unreleased %.1f, released %.1f, goroutine stacks %.1f, os stacks %.1f, metadata %.1f, other %.1f, total mapped %.1f MiB",
		label, kmib("VmRSS"), kmib("RssAnon"), kmib("RssFile"), v["Threads"], v["goroutines"],
		mib("/memory/classes/heap/objects:bytes"), mib("/memory/classes/heap/free:bytes"), mib("/memory/classes/heap/released:bytes"),
		mib("/memory/classes/heap/stacks:bytes"), mib("/memory/classes/os-stacks:bytes"),
		mib("/memory/classes/metadata/other:bytes")+mib("/memory/classes/metadata/mspan/inuse:bytes")+mib("/memory/classes/metadata/mcache/inuse:bytes"),
		mib("/memory/classes/other:bytes")+mib("/memory/classes/profiling/buckets:bytes"), mib("/memory/classes/total:bytes"))
}

// settledRSS samples the daemon's VmRSS (kB) every 250 ms for 5 s, from
// 3 s after its last operation (it trims at 2 s), and returns the median
// and the lowest and highest sample. An idle daemon's RSS is a sawtooth:
// the garbage of its background loops faults pages back in until the next
// collection, so a single reading at a fixed moment is partly luck (one
// reading 4 s after the stops gave 24.4 to 28.7 MiB over three runs of
// one build).
func (e *env) settledRSS() (median, lo, hi int) {
	time.Sleep(3 * time.Second)
	var s []int
	for i := 0; i < 21; i++ {
		if i > 0 {
			time.Sleep(250 * time.Millisecond)
		}
		s = append(s, e.daemonProc("VmRSS"))
	}
	slices.Sort(s)
	return s[len(s)/2], s[0], s[len(s)-1]
}

// BenchmarkDaemon500Running measures the daemon with 500 running VMs on
// fcfake: threads and RSS while they run, RSS after they are all stopped,
// against a daemon started afresh over the same stopped VMs (and an empty
// one's). Running and stopped are read once the burst has settled (the
// daemon trims 2 s after its last operation); the threads right after the
// creates are reported too. It logs where the daemon's memory sits at each
// point (memReport) when BANGER_BENCH_MEMDIR names where to keep the
// reports; BANGERD_MEMPROFILERATE=524288 (Go's default rate) puts heap
// profiles in them.
// One iteration is the whole scenario (several minutes on 2 cores).
// Run: go test -tags system -run '^$' -bench Daemon500Running -benchtime 1x -timeout 30m ./test/
func BenchmarkDaemon500Running(b *testing.B) {
	const n = 500
	e := newEnv(b, `cidr = "172.16.0.0/22"`+"\n")
	// The memory reports run only when asked for (BANGER_BENCH_MEMDIR):
	// writing one touches code and memory of its own (about 0.4 MiB of
	// code pages), which a daemon in use never does, and the daemon that
	// lived through the burst would have run two more than the fresh one.
	memDir := filepath.Join(e.dir, "mem")
	report := func(label string) {}
	if os.Getenv("BANGER_BENCH_MEMDIR") != "" {
		if err := os.MkdirAll(memDir, 0o700); err != nil {
			b.Fatal(err)
		}
		e.extra = append(e.extra, "BANGERD_MEMDEBUG_DIR="+memDir)
		report = func(label string) { b.Log(e.memReport(memDir, label)) }
	}
	if r := os.Getenv("BANGERD_MEMPROFILERATE"); r != "" {
		// Heap profiles in the reports (the daemon samples nothing by
		// default); sampling costs memory of its own, so the numbers are
		// then not comparable with a run without it.
		e.extra = append(e.extra, "BANGERD_MEMPROFILERATE="+r)
	}
	e.registerImage()
	e.ok("daemon", "start")
	time.Sleep(time.Second)
	fresh := e.daemonProc("VmRSS")
	report("fresh-empty")
	for b.Loop() {
		e.createMany("s", n)
		burstThreads := e.daemonProc("Threads")
		running, runLo, runHi := e.settledRSS()
		threads := e.daemonProc("Threads")
		report("running")
		var names []string
		for i := range n {
			names = append(names, fmt.Sprintf("s%d", i))
		}
		// 100 VMs per command (the CLI works on 32 at a time), so one
		// command stays within the harness's 2-minute limit on a loaded
		// machine.
		for i := 0; i < n; i += 100 {
			e.ok(append([]string{"vm", "stop"}, names[i:min(i+100, n)]...)...)
		}
		stopped, stopLo, stopHi := e.settledRSS()
		report("after-stop")
		// The reference: a daemon started afresh over the same 500 stopped
		// VMs, read after the same wait: its start-up reconcile is a burst
		// too, trimmed 2 s after it ends.
		e.ok("daemon", "stop")
		e.ok("daemon", "start")
		e.ok("vm", "list")
		restarted, freshLo, freshHi := e.settledRSS()
		report("fresh-stopped")
		b.ReportMetric(float64(threads), "threads-500-running")
		b.ReportMetric(float64(burstThreads), "threads-after-create-burst")
		b.ReportMetric(float64(running)/1024, "MiB-rss-500-running")
		b.ReportMetric(float64(stopped)/1024, "MiB-rss-after-stop")
		b.ReportMetric(float64(restarted)/1024, "MiB-rss-fresh-500-stopped")
		b.ReportMetric(float64(fresh)/1024, "MiB-rss-fresh-empty")
		b.ReportMetric(float64(stopped)/float64(restarted), "after-stop/fresh")
		b.Logf("daemon (rss: median of 21 readings over 5 s, lowest-highest): empty %d kB; %d threads right after the creates; %d threads and %d kB (%d-%d) with %d running; %d kB (%d-%d) after stopping them all, %d kB (%d-%d) for a fresh daemon over the same stopped vms (%.2f×)",
			fresh, burstThreads, threads, running, runLo, runHi, n, stopped, stopLo, stopHi, restarted, freshLo, freshHi, float64(stopped)/float64(restarted))
		for i := 0; i < n; i += 100 {
			e.ok(append([]string{"vm", "delete"}, names[i:min(i+100, n)]...)...)
		}
	}
}
