package daemon

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"banger/internal/api"
)

func TestPunchZeroPages(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mem")
	const pages = 1024 // 4 MiB
	data := make([]byte, pages*4096)
	for p := 0; p < pages; p += 64 {
		data[p*4096+17] = 0x5a // one byte in every 64th page
	}
	copy(data[len(data)-3:], "end")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, _ := os.OpenFile(path, os.O_RDWR, 0)
	f.Sync()
	f.Close()
	before := allocatedBytes(path)
	after, err := punchZeroPages(path)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("punching holes changed the file's content")
	}
	if before < int64(len(data)) {
		t.Skipf("the filesystem of %s did not allocate the written file (%d bytes): nothing to measure", path, before)
	}
	// 16 pages plus the last one hold data; allow for filesystem blocks
	// bigger than a page.
	if after > 64*4096*2 || after >= before {
		t.Fatalf("allocated bytes %d -> %d, want at most %d", before, after, 64*4096*2)
	}
	// Idempotent: a second pass finds nothing more.
	again, err := punchZeroPages(path)
	if err != nil || again != after {
		t.Fatalf("second pass: %d %v, want %d", again, err, after)
	}
}

func TestVersionAtLeast(t *testing.T) {
	for _, c := range []struct {
		v, min string
		want   bool
	}{
		{"1.16.1", "1.16", true}, {"1.16.0", "1.16", true}, {"1.15.9", "1.16", false},
		{"1.14.2", "1.16", false}, {"2.0.0", "1.16", true}, {"1.16.0-dev", "1.16", true},
	} {
		if got := versionAtLeast(c.v, c.min); got != c.want {
			t.Errorf("versionAtLeast(%q, %q) = %v, want %v", c.v, c.min, got, c.want)
		}
	}
}

// TestWake runs a real daemon in-process against fcfake, in a network
// namespace of its own (it re-executes itself under unshare), and checks
// the API the idle work builds on: wake of a running, a paused and a
// suspended VM, and its refusal of a stopped one.
func TestWake(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a bridge and taps in a network namespace")
	}
	if os.Getenv("BANGER_BENCH_NETNS") != "1" {
		if _, err := exec.LookPath("unshare"); err != nil {
			t.Skip("needs unshare(1) to make a throwaway network namespace")
		}
		// A mount namespace too, so that /sys shows the new network namespace
		// (as `ip netns exec` arranges).
		cmd := exec.Command("unshare", "--net", "--mount", "--", "sh", "-c", `mount -t sysfs sysfs /sys && ip link set lo up && exec "$@"`, "sh",
			os.Args[0], "-test.run", "^TestWake$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), "BANGER_BENCH_NETNS=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestWake") {
			t.Fatalf("TestWake in a network namespace: %v\n%s", err, out)
		}
		return
	}
	e := newBenchEnv(t)
	defer e.stop()
	ctx := context.Background()
	if _, err := e.create("w1"); err != nil {
		t.Fatal(err)
	}
	get := func() api.VM {
		var vm api.VM
		if err := e.cl.Call(ctx, api.MethodVMGet, api.VMRef{Ref: "w1"}, &vm); err != nil {
			t.Fatal(err)
		}
		return vm
	}
	if err := e.d.wake(ctx, "w1"); err != nil {
		t.Fatalf("wake of a running vm: %v", err)
	}
	if err := e.cl.Call(ctx, api.MethodVMPause, api.VMRef{Ref: "w1"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := e.d.wake(ctx, "w1"); err != nil || get().State != api.StateRunning {
		t.Fatalf("wake of a paused vm: %v, state %s", err, get().State)
	}
	if err := e.d.suspendVM(ctx, "w1", "idle"); err != nil {
		t.Fatal(err)
	}
	if vm := get(); vm.State != api.StateSuspended || vm.StopReason != "idle" || vm.Snapshot == nil {
		t.Fatalf("after suspendVM: %s (%s) %+v", vm.State, vm.StopReason, vm.Snapshot)
	}
	if err := e.d.wake(ctx, get().ID); err != nil {
		t.Fatalf("wake of a suspended vm: %v", err)
	}
	var h api.Health
	if err := e.cl.Call(ctx, api.MethodVMHealth, api.VMRef{Ref: "w1"}, &h); err != nil || !h.Healthy {
		t.Fatalf("health after wake: %+v %v", h, err)
	}
	if err := e.cl.Call(ctx, api.MethodVMStop, api.VMStopParams{Ref: "w1"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := e.d.wake(ctx, "w1"); err == nil || !strings.Contains(err.Error(), "stopped") {
		t.Fatalf("wake of a stopped vm: %v, want an error naming the state", err)
	}
}

// BenchmarkRestore is vm.start of a suspended VM to healthy, in-process
// (for -cpuprofile). Run as root:
//
//	unshare --net --mount sh -c 'mount -t sysfs sysfs /sys; ip link set lo up; BANGER_BENCH_NETNS=1 go test -run ^$ -bench Restore -benchtime 20x -cpuprofile /tmp/restore.prof ./internal/daemon/'
func BenchmarkRestore(b *testing.B) {
	e := newBenchEnv(b)
	defer e.stop()
	ctx := context.Background()
	if _, err := e.create("r1"); err != nil {
		b.Fatal(err)
	}
	ectx, cancel := context.WithCancel(ctx)
	defer cancel()
	evs, _, err := e.cl.Events(ectx)
	if err != nil {
		b.Fatal(err)
	}
	stages := map[string][]time.Duration{}
	var smu sync.Mutex
	go func() {
		last := 0.0
		for ev := range evs {
			if ev.Kind != api.EventVMProgress {
				continue
			}
			smu.Lock()
			if ev.Elapsed < last {
				last = 0
			}
			stages[ev.Stage] = append(stages[ev.Stage], time.Duration((ev.Elapsed-last)*float64(time.Second)))
			last = ev.Elapsed
			smu.Unlock()
		}
	}()
	defer func() {
		smu.Lock()
		defer smu.Unlock()
		for k, v := range stages {
			b.ReportMetric(float64(percentile(v, 0.5).Microseconds())/1000, k+"-ms")
		}
	}()
	var ds []time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		if err := e.cl.Call(ctx, api.MethodVMSuspend, api.VMRef{Ref: "r1"}, nil); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		var res api.VMResult
		t0 := time.Now()
		if err := e.cl.Call(ctx, api.MethodVMStart, api.VMStartParams{Ref: "r1"}, &res); err != nil || res.Health == nil || !res.Health.Healthy {
			b.Fatalf("restore: %v %+v", err, res.Health)
		}
		ds = append(ds, time.Since(t0))
	}
	b.StopTimer()
	b.ReportMetric(float64(percentile(ds, 0.5).Microseconds())/1000, "median-ms")
}
