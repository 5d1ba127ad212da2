package daemon

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/client"
	"banger/internal/config"
	"banger/internal/hostops"
)

// benchEnv runs a real daemon in-process (real hostops, real taps in the
// current network namespace) against the fake Firecracker. It must run in
// a throwaway namespace: `make bench` wraps it in `ip netns exec`.
type benchEnv struct {
	d    *Daemon
	cl   *client.Client
	stop func()
}

func newBenchEnv(b testing.TB) *benchEnv {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Skip("needs root: creates a bridge and taps")
	}
	if os.Getenv("BANGER_BENCH_NETNS") != "1" {
		b.Skip("run through `make bench`, which provides a throwaway network namespace")
	}
	dir, err := os.MkdirTemp("/tmp", "bgb-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	root, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		b.Fatal(err)
	}
	mod := filepath.Dir(strings.TrimSpace(string(root)))
	for out, pkg := range map[string]string{"fcfake": "./test/fcfake", "banger-agent": "./cmd/banger-agent"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, out), pkg)
		cmd.Dir = mod
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if o, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("building %s: %v: %s", pkg, err, o)
		}
	}
	kernel := filepath.Join(dir, "vmlinux")
	os.WriteFile(kernel, []byte("fake"), 0o644)
	img := filepath.Join(dir, "img.ext4")
	tree := filepath.Join(dir, "tree")
	os.MkdirAll(filepath.Join(tree, "root"), 0o700)
	os.WriteFile(filepath.Join(tree, "root", ".bashrc"), []byte("#\n"), 0o644)
	os.MkdirAll(filepath.Join(tree, "sbin"), 0o755)
	os.WriteFile(filepath.Join(tree, "sbin", "init"), []byte("#!/bin/sh\n"), 0o755) // register wants an init
	if o, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", tree, img, "16M").CombinedOutput(); err != nil {
		b.Fatalf("mkfs: %v: %s", err, o)
	}
	env := map[string]string{
		"HOME":                           dir,
		"BANGER_STATE_DIR":               filepath.Join(dir, "s"),
		"XDG_RUNTIME_DIR":                filepath.Join(dir, "r"),
		"BANGER_CONFIG":                  filepath.Join(dir, "none.toml"),
		"BANGER_FIRECRACKER_BIN":         filepath.Join(dir, "fcfake"),
		"BANGER_KERNEL_PATH":             kernel,
		"BANGER_VSOCK_AGENT_PATH":        filepath.Join(dir, "banger-agent"),
		"BANGER_IGNORE_PREFLIGHT_ERRORS": "kvm",
		"BANGER_STORAGE_DRIVER":          "copy",
		"BANGER_DEFAULT_DISK_SIZE":       "64M",
		"BANGER_DEFAULT_WORK_DISK_SIZE":  "64M",
		"BANGER_DEFAULT_MEMORY_MIB":      "256",
		"BANGER_STATS_POLL_INTERVAL":     "1h",
		"BANGER_RECONCILE_INTERVAL":      "1h",
	}
	getenv := func(k string) string { return env[k] }
	paths, err := config.DefaultPaths(getenv)
	if err != nil {
		b.Fatal(err)
	}
	loaded, err := config.Load(paths, getenv)
	if err != nil {
		b.Fatal(err)
	}
	host := hostops.New(hostops.Options{Roots: []string{paths.StateDir, paths.DataDir}})
	td := runTestDaemon(b, loaded, host)
	cl := td.cl
	if err := cl.Call(context.Background(), api.MethodImageRegister, api.ImageRegisterParams{Name: "debian", RootfsPath: img}, nil); err != nil {
		b.Fatal(err)
	}
	e := &benchEnv{d: td.d, cl: cl}
	// A benchmark that fails between a create and its delete leaves a VM
	// whose fcfake would outlive the daemon (VMs survive a daemon stop):
	// delete whatever is left before stopping it.
	e.stop = func() {
		var l api.VMList
		if cl.Call(context.Background(), api.MethodVMList, nil, &l) == nil {
			for _, v := range l.VMs {
				_ = cl.Call(context.Background(), api.MethodVMDelete, api.VMRef{Ref: v.ID}, nil)
			}
		}
		td.stop()
	}
	return e
}

func (e *benchEnv) create(name string) (time.Duration, error) {
	t0 := time.Now()
	var res api.VMResult
	if err := e.cl.Call(context.Background(), api.MethodVMCreate, api.VMCreateParams{Name: name}, &res); err != nil {
		return 0, fmt.Errorf("create %s: %w", name, err)
	}
	took := time.Since(t0)
	if res.Health == nil || !res.Health.Healthy {
		return 0, fmt.Errorf("create %s: unhealthy: %+v", name, res.Health)
	}
	return took, nil
}

func (e *benchEnv) deleteAll(b *testing.B) {
	var l api.VMList
	if err := e.cl.Call(context.Background(), api.MethodVMList, nil, &l); err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, v := range l.VMs {
		wg.Add(1)
		go func(id string) {
			defer wg.Done()
			if err := e.cl.Call(context.Background(), api.MethodVMDelete, api.VMRef{Ref: id}, nil); err != nil {
				b.Errorf("delete: %v", err)
			}
		}(v.ID)
	}
	wg.Wait()
}

// stageKey names the n-th vm.progress stage of one VM's create: a create
// publishes "storage" twice (its disks, then start's activation of the
// root disk), and each gets its own key so neither median blends the two.
func stageKey(stage string, n int) string {
	switch {
	case stage == "storage" && n == 1:
		return "storage:create"
	case stage == "storage" && n == 2:
		return "storage:start"
	case n > 1:
		return fmt.Sprintf("%s#%d", stage, n)
	}
	return stage
}

// reportStages reports every stage's min, median, p95 and max gap (the
// time since the VM's previous stage) and logs them as a table.
func reportStages(b *testing.B, stages map[string][]time.Duration) {
	keys := make([]string, 0, len(stages))
	for k := range stages {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var tbl strings.Builder
	fmt.Fprintf(&tbl, "%-16s %5s %9s %9s %9s %9s\n", "stage", "n", "min-ms", "median-ms", "p95-ms", "max-ms")
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	for _, k := range keys {
		v := stages[k]
		lo, med, p95, hi := ms(percentile(v, 0)), ms(percentile(v, 0.5)), ms(percentile(v, 0.95)), ms(percentile(v, 1))
		b.ReportMetric(lo, k+"-min-ms")
		b.ReportMetric(med, k+"-median-ms")
		b.ReportMetric(p95, k+"-p95-ms")
		b.ReportMetric(hi, k+"-max-ms")
		fmt.Fprintf(&tbl, "%-16s %5d %9.2f %9.2f %9.2f %9.2f\n", k, len(v), lo, med, p95, hi)
	}
	b.Logf("progress stages (gap since the previous stage):\n%s", tbl.String())
}

func percentile(ds []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[int(float64(len(s)-1)*p)]
}

// BenchmarkCreateToRunning measures vm.create until the VM is running and
// its agent healthy, one VM at a time, against fcfake with a 16 MiB image.
func BenchmarkCreateToRunning(b *testing.B) {
	e := newBenchEnv(b)
	defer e.stop()
	var ds []time.Duration
	// Where the time goes: the gap before each progress stage.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	evs, _, err := e.cl.Events(ctx)
	if err != nil {
		b.Fatal(err)
	}
	stages := map[string][]time.Duration{}
	var smu sync.Mutex
	go func() {
		last := map[string]float64{}
		seen := map[string]map[string]int{} // per VM: times each stage was published
		for ev := range evs {
			if ev.Kind != api.EventVMProgress {
				continue
			}
			smu.Lock()
			if seen[ev.VMID] == nil {
				seen[ev.VMID] = map[string]int{}
			}
			seen[ev.VMID][ev.Stage]++
			key := stageKey(ev.Stage, seen[ev.VMID][ev.Stage])
			stages[key] = append(stages[key], time.Duration((ev.Elapsed-last[ev.VMID])*float64(time.Second)))
			last[ev.VMID] = ev.Elapsed
			smu.Unlock()
		}
	}()
	defer func() {
		smu.Lock()
		defer smu.Unlock()
		reportStages(b, stages)
	}()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d, err := e.create(fmt.Sprintf("b%d", i))
		if err != nil {
			b.Fatal(err)
		}
		ds = append(ds, d)
		b.StopTimer()
		e.deleteAll(b)
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(float64(percentile(ds, 0.5).Microseconds())/1000, "median-ms")
	b.ReportMetric(float64(percentile(ds, 0.95).Microseconds())/1000, "p95-ms")
}

// BenchmarkCreate20Concurrent measures 20 concurrent creates to running.
func BenchmarkCreate20Concurrent(b *testing.B) {
	e := newBenchEnv(b)
	defer e.stop()
	var totals []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		var wg sync.WaitGroup
		for j := range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := e.create(fmt.Sprintf("c%d-%d", i, j)); err != nil {
					b.Error(err)
				}
			}()
		}
		wg.Wait()
		totals = append(totals, time.Since(t0))
		b.StopTimer()
		e.deleteAll(b)
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(float64(percentile(totals, 0.5).Microseconds())/1000, "total-ms")
}
