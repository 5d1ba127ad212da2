//go:build system

package test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// Where the user waits on the CLI (issue 15): each figure is measured side
// by side in one run, the two commands alternating, so machine load hits
// both alike. Run (root, for the create/start pair):
//
//	go test -tags system -run '^$' -bench 'CLI' -benchtime 20x ./test/
//
// or `make bench-cli`. Instruction counts come from callgrind when valgrind
// is installed (apt-get install valgrind); without it they are left out and
// the log says so.

// timedCmd is one side of a comparison: mk builds the command, after (may be
// nil) runs untimed after each run (a delete after a create).
type timedCmd struct {
	name  string
	mk    func() *exec.Cmd
	after func()
}

// compare runs each command b.N times (after one warm-up each), alternating,
// and reports every side's median and p95 wall time, the ratio of the
// first side's median to each other side's ("<first>/<other>"), and each
// side's median page faults (minor faults from rusage: on a loaded or
// virtualised host they are much of a short process's time, and unlike
// wall time they do not move with the load).
func compare(b *testing.B, sides ...timedCmd) {
	b.Helper()
	faults := make([][]int64, len(sides))
	runOne := func(j int, s timedCmd) time.Duration {
		cmd := s.mk()
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		t0 := time.Now()
		err := cmd.Run()
		d := time.Since(t0)
		if err != nil {
			b.Fatalf("%s: %v: %s", s.name, err, out.Bytes())
		}
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok && j >= 0 {
			faults[j] = append(faults[j], ru.Minflt)
		}
		if s.after != nil {
			s.after()
		}
		return d
	}
	for _, s := range sides {
		runOne(-1, s)
	}
	ds := make([][]time.Duration, len(sides))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j, s := range sides {
			ds[j] = append(ds[j], runOne(j, s))
		}
	}
	b.StopTimer()
	med := make([]float64, len(sides))
	for j, s := range sides {
		sort.Slice(ds[j], func(x, y int) bool { return ds[j][x] < ds[j][y] })
		med[j] = float64(ds[j][len(ds[j])/2].Microseconds()) / 1000
		b.ReportMetric(med[j], s.name+"-median-ms")
		b.ReportMetric(float64(ds[j][(len(ds[j])-1)*95/100].Microseconds())/1000, s.name+"-p95-ms")
		if len(faults[j]) > 0 {
			slices.Sort(faults[j])
			b.ReportMetric(float64(faults[j][len(faults[j])/2]), s.name+"-faults")
		}
	}
	for j := 1; j < len(sides); j++ {
		if med[j] > 0 {
			b.ReportMetric(med[0]/med[j], sides[0].name+"/"+sides[j].name)
		}
	}
}

var collectedRe = regexp.MustCompile(`Collected : (\d+)`)

// reportInstructions reports the instructions one run of each command
// executes (callgrind), and the first's ratio to the others'.
func reportInstructions(b *testing.B, sides ...timedCmd) {
	b.Helper()
	vg, err := exec.LookPath("valgrind")
	if err != nil {
		b.Log("valgrind is not installed: no instruction counts (apt-get install valgrind)")
		return
	}
	counts := make([]float64, len(sides))
	for j, s := range sides {
		cmd := s.mk()
		args := append([]string{"--tool=callgrind", "--callgrind-out-file=/dev/null", cmd.Path}, cmd.Args[1:]...)
		vcmd := exec.Command(vg, args...)
		// Go's preemption signals (SIGURG) trip callgrind's signal
		// bookkeeping; without them the count is the same work.
		vcmd.Env = append(append([]string(nil), cmd.Env...), "GODEBUG=asyncpreemptoff=1")
		var errb bytes.Buffer
		vcmd.Stdout, vcmd.Stderr = &bytes.Buffer{}, &errb
		if err := vcmd.Run(); err != nil {
			b.Fatalf("callgrind %s: %v: %s", s.name, err, errb.Bytes())
		}
		if s.after != nil {
			s.after()
		}
		m := collectedRe.FindSubmatch(errb.Bytes())
		if m == nil {
			b.Fatalf("callgrind %s: no instruction count in %s", s.name, errb.Bytes())
		}
		n, _ := strconv.ParseFloat(string(m[1]), 64)
		counts[j] = n / 1e6
		b.ReportMetric(counts[j], s.name+"-Minstr")
	}
	for j := 1; j < len(sides); j++ {
		b.ReportMetric(counts[0]/counts[j], sides[0].name+"/"+sides[j].name+"-instr")
	}
}

// helloWorld is a Go hello-world built like the test binaries (static): the
// floor for a Go process that starts, writes a line and exits. It lives in
// the benchmark's temp dir (go build's cache makes the rebuild cheap).
func helloWorld(b *testing.B) string {
	b.Helper()
	dir := b.TempDir()
	os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module hello\n\ngo 1.22\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main\n\nimport \"os\"\n\nfunc main() { os.Stdout.WriteString(\"hello\\n\") }\n"), 0o644)
	bin := filepath.Join(dir, "hello")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("building hello-world: %v: %s", err, out)
	}
	return bin
}

func helloSide(b *testing.B) timedCmd {
	bin := helloWorld(b)
	return timedCmd{name: "hello", mk: func() *exec.Cmd { return exec.Command(bin) }}
}

// BenchmarkCLIVersion: `banger version` against a Go hello-world (the
// issue's target: within 1.6x) and against the complete binary,
// banger-full, which the front leaves the heavy commands to. No daemon, no
// root.
func BenchmarkCLIVersion(b *testing.B) {
	c := newCLIBench(b)
	version := timedCmd{name: "version", mk: func() *exec.Cmd { return c.cmd("version") }}
	full := timedCmd{name: "full", mk: func() *exec.Cmd {
		cmd := c.cmd("version")
		cmd.Path = filepath.Join(c.bins.dir, "banger-full")
		cmd.Args[0] = cmd.Path
		return cmd
	}}
	hello := helloSide(b)
	compare(b, version, hello, full)
	reportInstructions(b, version, hello, full)
}

// BenchmarkCLIList500: `banger vm list` with 500 VMs in the store against a
// Go hello-world (targets: within 5x, under 35 M instructions).
func BenchmarkCLIList500(b *testing.B) {
	c := newCLIBench(b)
	c.seed(b, 500)
	if out, err := c.cmd("daemon", "start").CombinedOutput(); err != nil {
		b.Fatalf("daemon start: %v: %s", err, out)
	}
	list := timedCmd{name: "list", mk: func() *exec.Cmd { return c.cmd("vm", "list") }}
	hello := helloSide(b)
	compare(b, list, hello)
	reportInstructions(b, list, hello)
}

// cliEnvCmd runs the CLI outside the namespace (it only talks to the
// daemon's socket; the daemon and its VMs live in the namespace), so `ip
// netns exec` does not add to the figures.
func cliEnvCmd(e *env, args ...string) *exec.Cmd {
	cmd := exec.Command(e.bins.banger, args...)
	cmd.Env = e.environ()
	return cmd
}

// BenchmarkCLICreateProgress: `vm create` printing its stages against
// `vm create -q` (target: within 1.2x), against fcfake. Each create is
// followed by an untimed delete.
func BenchmarkCLICreateProgress(b *testing.B) {
	e := newEnv(b, "")
	e.registerImage()
	e.ok("daemon", "start")
	n := 0
	side := func(name string, args ...string) timedCmd {
		var vm string
		return timedCmd{name: name,
			mk: func() *exec.Cmd {
				n++
				vm = fmt.Sprintf("%s%d", name[:1], n)
				return cliEnvCmd(e, append([]string{"vm", "create", vm}, args...)...)
			},
			after: func() { e.ok("vm", "delete", vm) },
		}
	}
	compare(b, side("progress"), side("quiet", "-q"))
	b.StopTimer()
	e.assertClean()
}

// BenchmarkCLIStartProgress: `vm start` printing its stages against `vm
// start --json` and `vm start -q` (target: within 1.2x). Each start is
// followed by an untimed kill.
func BenchmarkCLIStartProgress(b *testing.B) {
	e := newEnv(b, "")
	e.registerImage()
	e.ok("vm", "create", "--no-start", "dev")
	side := func(name string, args ...string) timedCmd {
		return timedCmd{name: name,
			mk:    func() *exec.Cmd { return cliEnvCmd(e, append([]string{"vm", "start", "dev"}, args...)...) },
			after: func() { e.ok("vm", "kill", "dev") },
		}
	}
	compare(b, side("progress"), side("json", "--json"), side("quiet", "-q"))
	b.StopTimer()
	e.ok("vm", "delete", "dev")
	e.assertClean()
}
