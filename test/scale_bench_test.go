//go:build system

package test

import (
	"fmt"
	"os"
	"strconv"
	"strings"
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

// BenchmarkDaemon500Running measures the daemon with 500 running VMs on
// fcfake: threads and RSS while they run, RSS after they are all stopped,
// against a daemon started afresh over the same stopped VMs (and an empty
// one's). One iteration is the whole scenario (several
// minutes on 2 cores).
// Run: go test -tags system -run '^$' -bench Daemon500Running -benchtime 1x -timeout 30m ./test/
func BenchmarkDaemon500Running(b *testing.B) {
	const n = 500
	e := newEnv(b, `cidr = "172.16.0.0/22"`+"\n")
	e.registerImage()
	e.ok("daemon", "start")
	time.Sleep(time.Second)
	fresh := e.daemonProc("VmRSS")
	for b.Loop() {
		e.createMany("s", n)
		threads, running := e.daemonProc("Threads"), e.daemonProc("VmRSS")
		names := []string{"vm", "stop"}
		for i := range n {
			names = append(names, fmt.Sprintf("s%d", i))
		}
		e.ok(names...)
		time.Sleep(4 * time.Second) // the daemon trims 2 s after the last exit
		stopped := e.daemonProc("VmRSS")
		// The reference: a daemon started afresh over the same 500 stopped VMs.
		e.ok("daemon", "stop")
		e.ok("daemon", "start")
		e.ok("vm", "list")
		time.Sleep(time.Second)
		restarted := e.daemonProc("VmRSS")
		b.ReportMetric(float64(threads), "threads-500-running")
		b.ReportMetric(float64(running)/1024, "MiB-rss-500-running")
		b.ReportMetric(float64(stopped)/1024, "MiB-rss-after-stop")
		b.ReportMetric(float64(restarted)/1024, "MiB-rss-fresh-500-stopped")
		b.ReportMetric(float64(fresh)/1024, "MiB-rss-fresh-empty")
		b.Logf("daemon: empty %d kB; %d threads and %d kB with %d running; %d kB after stopping them all, %d kB for a fresh daemon over the same stopped vms (%.2f×)",
			fresh, threads, running, n, stopped, restarted, float64(stopped)/float64(restarted))
		names[1] = "delete"
		e.ok(names...)
	}
}
