//go:build system

package test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/client"
	"banger/internal/store"
)

// cliBench is a daemon (no VMs running) for whole-process CLI timings. It
// needs no root: nothing touches the host network.
type cliBench struct {
	dir  string
	bins binaries
}

func newCLIBench(b *testing.B) *cliBench {
	b.Helper()
	t := &testing.T{}
	bins := buildBinaries(t)
	if bins.banger == "" {
		b.Fatal("building binaries failed")
	}
	dir, err := os.MkdirTemp("/tmp", "bclib-")
	if err != nil {
		b.Fatal(err)
	}
	c := &cliBench{dir: dir, bins: bins}
	b.Cleanup(func() {
		c.cmd("daemon", "stop").Run()
		os.RemoveAll(dir)
	})
	return c
}

func (c *cliBench) cmd(args ...string) *exec.Cmd {
	cmd := exec.Command(c.bins.banger, args...)
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + c.dir,
		"BANGER_STATE_DIR=" + filepath.Join(c.dir, "s"),
		"XDG_RUNTIME_DIR=" + filepath.Join(c.dir, "r"),
		"BANGER_CONFIG=" + filepath.Join(c.dir, "none.toml"),
		"BANGER_DNS_LISTEN_ADDR=127.0.0.1:42199",
	}
	return cmd
}

// seed writes n stopped VMs straight into the store.
func (c *cliBench) seed(b *testing.B, n int) {
	st, err := store.Open(context.Background(), filepath.Join(c.dir, "s", "banger.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	img := store.Image{Name: "debian", RootfsPath: "/nonexistent/rootfs.ext4", SizeBytes: 1 << 30, Source: "registered"}
	if err := st.CreateImage(context.Background(), &img); err != nil {
		b.Fatal(err)
	}
	next := netip.MustParseAddr("10.200.0.2")
	for i := range n {
		vm := store.VM{Name: fmt.Sprintf("vm%03d", i), ImageID: img.ID, State: "stopped", VCPU: 2, MemoryMiB: 1024,
			DiskBytes: 8 << 30, WorkDiskBytes: 16 << 30, Dir: filepath.Join(c.dir, "s", "vms", fmt.Sprint(i))}
		err := st.CreateVM(context.Background(), &vm, func(u store.Used) (store.Allocation, error) {
			ip := next
			next = next.Next()
			return store.Allocation{IP: ip, MAC: fmt.Sprintf("02:fc:%02x:%02x:%02x:%02x", ip.As4()[0], ip.As4()[1], ip.As4()[2], ip.As4()[3]), CID: uint32(3 + i)}, nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// timeRuns runs the command b.N times (after one warm-up) and reports the
// median and p95 wall time of the whole process, plus the CPU time the
// client process and the daemon spent per run (load-independent).
func timeRuns(b *testing.B, daemonPID int, mk func() *exec.Cmd) {
	if out, err := mk().CombinedOutput(); err != nil {
		b.Fatalf("warm-up: %v: %s", err, out)
	}
	var ds []time.Duration
	var clientCPU time.Duration
	d0 := procCPU(daemonPID)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cmd := mk()
		t0 := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("run: %v: %s", err, out)
		}
		ds = append(ds, time.Since(t0))
		clientCPU += cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	b.StopTimer()
	daemonCPU := procCPU(daemonPID) - d0
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	b.ReportMetric(float64(ds[len(ds)/2].Microseconds())/1000, "median-ms")
	b.ReportMetric(float64(ds[(len(ds)-1)*95/100].Microseconds())/1000, "p95-ms")
	b.ReportMetric(float64(clientCPU.Microseconds())/1000/float64(b.N), "client-cpu-ms")
	b.ReportMetric(float64(daemonCPU.Microseconds())/1000/float64(b.N), "daemon-cpu-ms")
}

// selfCPU is this process's user+system CPU time so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU is the user+system CPU time of pid so far (USER_HZ = 100).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseUint(f[11], 10, 64)
	k, _ := strconv.ParseUint(f[12], 10, 64)
	return time.Duration(u+k) * 10 * time.Millisecond
}

func (c *cliBench) daemonPID(b *testing.B) int {
	out, err := c.cmd("daemon", "status", "--json").Output()
	if err != nil {
		b.Fatalf("daemon status: %v", err)
	}
	var st struct {
		PID int `json:"pid"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		b.Fatal(err)
	}
	return st.PID
}

// BenchmarkVMList500 times `banger vm list` as a whole process with 500
// VMs in the store. Run: go test -tags system -run '^$' -bench VMList500 -benchtime 20x ./test/
func BenchmarkVMList500(b *testing.B) {
	c := newCLIBench(b)
	c.seed(b, 500)
	if out, err := c.cmd("daemon", "start").CombinedOutput(); err != nil {
		b.Fatalf("daemon start: %v: %s", err, out)
	}
	timeRuns(b, c.daemonPID(b), func() *exec.Cmd { return c.cmd("vm", "list") })
}

// BenchmarkDaemonStatus times `banger daemon status` as a whole process.
func BenchmarkDaemonStatus(b *testing.B) {
	c := newCLIBench(b)
	if out, err := c.cmd("daemon", "start").CombinedOutput(); err != nil {
		b.Fatalf("daemon start: %v: %s", err, out)
	}
	timeRuns(b, c.daemonPID(b), func() *exec.Cmd { return c.cmd("daemon", "status") })
}

// BenchmarkVMCp1GiB measures `banger vm cp` of a 1 GiB file against fcfake
// (whose vsock serves the real agent on the host) next to `vm exec -- cat`
// of the same file through the same vsock path, all in one run: cp-out
// (guest → host file), cp-stdout (guest → tar on /dev/null, the same sink
// as cat), cp-in (host file → guest) and cat, each in MB/s. The copies to
// a file are bound by the disk; cp-stdout and cat compare the stream.
// Run: go test -tags system -run '^$' -bench VMCp1GiB -benchtime 3x ./test/
func BenchmarkVMCp1GiB(b *testing.B) {
	e := newEnv(b, "")
	e.registerImage()
	e.ok("vm", "create", "dev")
	dir := b.TempDir()
	src := filepath.Join(dir, "big")
	f, err := os.Create(src)
	if err != nil {
		b.Fatal(err)
	}
	const size = 1 << 30
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte(i * 7)
	}
	for range size / len(chunk) {
		if _, err := f.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	f.Close()
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer devnull.Close()
	timed := func(args ...string) time.Duration {
		cmd := exec.Command("ip", append([]string{"netns", "exec", e.ns, e.bins.banger}, args...)...)
		cmd.Env = e.environ()
		cmd.Stdout = devnull
		var errb strings.Builder
		cmd.Stderr = &errb
		t0 := time.Now()
		if err := cmd.Run(); err != nil {
			b.Fatalf("banger %v: %v: %s", args, err, errb.String())
		}
		return time.Since(t0)
	}
	var out, stdout, in, cat time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		dst := filepath.Join(dir, "out")
		// The copies to disk start with no dirty pages of the last one
		// (writeback throttling would otherwise charge one for another).
		_ = exec.Command("sync").Run()
		out += timed("vm", "cp", "dev:"+src, dst)
		os.Remove(dst)
		stdout += timed("vm", "cp", "dev:"+src, "-")
		_ = exec.Command("sync").Run()
		in += timed("vm", "cp", src, "dev:"+dst)
		os.Remove(dst)
		cat += timed("vm", "exec", "dev", "--", "cat", src)
	}
	b.StopTimer()
	mbs := func(d time.Duration) float64 { return float64(size) * float64(b.N) / 1e6 / d.Seconds() }
	b.ReportMetric(mbs(out), "cp-out-MB/s")
	b.ReportMetric(mbs(stdout), "cp-stdout-MB/s")
	b.ReportMetric(mbs(in), "cp-in-MB/s")
	b.ReportMetric(mbs(cat), "cat-MB/s")
	e.ok("vm", "delete", "dev")
	e.assertClean()
}

// BenchmarkVMForwardThroughput sends 64 MiB per iteration to a guest sink
// service of fcfake, once over a direct loopback TCP connection and once
// through `banger vm forward` (host TCP → forward → vsock UDS → agent →
// guest TCP), and reports both rates and their ratio (target ≥ 0.5).
// Run: go test -tags system -run '^$' -bench VMForwardThroughput -benchtime 5x ./test/
func BenchmarkVMForwardThroughput(b *testing.B) {
	e := newEnv(b, "")
	e.registerImage()
	e.ok("vm", "create", "dev")
	svc := e.listenGuest(e.vm("dev").CID, 0)
	defer svc.Close()
	go func() {
		for {
			c, err := svc.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				n, _ := io.Copy(io.Discard, c)
				fmt.Fprintf(c, "%d\n", n)
			}()
		}
	}()
	fw := e.startForward("dev", fmt.Sprintf("0:%d", svc.Addr().(*net.TCPAddr).Port))
	const size = 64 << 20
	buf := make([]byte, 256<<10)
	send := func(addr string) time.Duration {
		c, err := e.dialNetns(addr)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		for sent := 0; sent < size; sent += len(buf) {
			if _, err := c.Write(buf); err != nil {
				b.Fatalf("sending to %s: %v", addr, err)
			}
		}
		c.(*net.TCPConn).CloseWrite()
		reply, err := io.ReadAll(c)
		if err != nil || strings.TrimSpace(string(reply)) != strconv.Itoa(size) {
			b.Fatalf("the sink at %s answered %q, %v; want %d", addr, reply, err, size)
		}
		return time.Since(start)
	}
	// CPU per 64 MiB of each process on the path, to tell where the
	// forward's time goes: this test process (client and sink) in each
	// phase, the `vm forward` CLI and fcfake (the agent's side).
	fcPID, cliPID := e.vm("dev").PID, fw.cmd.Process.Pid
	var direct, forwarded, selfDirect, selfForward, cliCPU, fcCPU, fcIdle time.Duration
	b.ResetTimer()
	for range b.N {
		s0, f0 := selfCPU(), procCPU(fcPID)
		direct += send(svc.Addr().String())
		s1, c1, f1 := selfCPU(), procCPU(cliPID), procCPU(fcPID)
		fcIdle += f1 - f0
		forwarded += send(fw.addrs[0])
		s2 := selfCPU()
		selfDirect += s1 - s0
		selfForward += s2 - s1
		cliCPU += procCPU(cliPID) - c1
		fcCPU += procCPU(fcPID) - f1
	}
	b.StopTimer()
	mbps := func(d time.Duration) float64 { return float64(size) * float64(b.N) / d.Seconds() / 1e6 }
	b.ReportMetric(mbps(direct), "direct-MB/s")
	b.ReportMetric(mbps(forwarded), "forward-MB/s")
	b.ReportMetric(mbps(forwarded)/mbps(direct), "ratio")
	per := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(b.N) }
	b.ReportMetric(per(selfDirect), "direct-ends-cpu-ms")
	b.ReportMetric(per(selfForward), "forward-ends-cpu-ms")
	b.ReportMetric(per(cliCPU), "forward-cli-cpu-ms")
	b.ReportMetric(per(fcCPU), "forward-agent-cpu-ms")
	b.ReportMetric(per(fcIdle), "direct-agent-cpu-ms") // fcfake's own, not on the direct path
}

// BenchmarkResumeSuspended times vm.start of a suspended VM until its
// agent is healthy (snapshot identity checked, Firecracker launched, tap
// and storage back, snapshot loaded, agent answering, clock stepped), over
// the daemon socket, against fcfake: with fcfake's load taking next to no
// time, this is the daemon's overhead. The suspend between runs is not
// timed. Run: go test -tags system -run '^$' -bench ResumeSuspended -benchtime 20x ./test/
func BenchmarkResumeSuspended(b *testing.B) {
	e := newEnv(b, "")
	e.registerImage()
	e.ok("vm", "create", "r1")
	cl := client.New(filepath.Join(e.dir, "r", "banger", "bangerd.sock"))
	ctx := context.Background()
	pid := e.daemonPID()
	// Where the time goes: the gap before each progress stage.
	ectx, cancel := context.WithCancel(ctx)
	defer cancel()
	evs, _, err := cl.Events(ectx)
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
			sort.Slice(v, func(i, j int) bool { return v[i] < v[j] })
			b.ReportMetric(float64(v[len(v)/2].Microseconds())/1000, k+"-ms")
		}
	}()
	var ds []time.Duration
	var cpu time.Duration
	for i := 0; i < b.N; i++ {
		if err := cl.Call(ctx, api.MethodVMSuspend, api.VMRef{Ref: "r1"}, nil); err != nil {
			b.Fatal(err)
		}
		c0 := procCPU(pid)
		t0 := time.Now()
		var res api.VMResult
		if err := cl.Call(ctx, api.MethodVMStart, api.VMStartParams{Ref: "r1"}, &res); err != nil {
			b.Fatal(err)
		}
		ds = append(ds, time.Since(t0))
		cpu += procCPU(pid) - c0
		if res.Health == nil || !res.Health.Healthy || res.VM.State != api.StateRunning {
			b.Fatalf("restore %d: %+v %s", i, res.Health, res.VM.State)
		}
	}
	b.StopTimer()
	// fcfake's own time for each load (request to response), subtracted
	// from each restore: the rest is the daemon's overhead.
	var loads []time.Duration
	var reqAt time.Time
	for _, ev := range e.records() {
		if ev.Path != "/snapshot/load" {
			continue
		}
		if ev.Event == "request" {
			reqAt = ev.T
		} else if ev.Event == "response" && !reqAt.IsZero() {
			loads = append(loads, ev.T.Sub(reqAt))
		}
	}
	if len(loads) != len(ds) {
		b.Fatalf("%d loads recorded for %d restores", len(loads), len(ds))
	}
	over := make([]time.Duration, len(ds))
	for i := range ds {
		over[i] = ds[i] - loads[i]
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	sort.Slice(over, func(i, j int) bool { return over[i] < over[j] })
	sort.Slice(loads, func(i, j int) bool { return loads[i] < loads[j] })
	b.ReportMetric(float64(ds[len(ds)/2].Microseconds())/1000, "median-ms")
	b.ReportMetric(float64(ds[(len(ds)-1)*95/100].Microseconds())/1000, "p95-ms")
	b.ReportMetric(float64(loads[len(loads)/2].Microseconds())/1000, "fcfake-load-median-ms")
	b.ReportMetric(float64(over[len(over)/2].Microseconds())/1000, "overhead-median-ms")
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "daemon-cpu-ms")
	e.ok("vm", "delete", "r1")
}

// BenchmarkSuspendedSnapshotBytes1GiB suspends a 1 GiB guest (fcfake
// writes the whole memory file, as Firecracker does) and reports what the
// snapshot takes on disk after banger punched out the zero pages.
// Run: go test -tags system -run '^$' -bench SuspendedSnapshotBytes -benchtime 3x ./test/
func BenchmarkSuspendedSnapshotBytes1GiB(b *testing.B) {
	e := newEnv(b, "")
	e.registerImage()
	e.ok("vm", "create", "big", "--memory", "1G")
	var bytes, mem int64
	var ds []time.Duration
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		e.ok("vm", "suspend", "big")
		ds = append(ds, time.Since(t0))
		vm := e.vm("big")
		if vm.Snapshot == nil {
			b.Fatalf("suspended vm has no snapshot: %+v", vm)
		}
		bytes, mem = vm.Snapshot.DiskBytes, vm.Snapshot.MemoryBytes
		b.StopTimer()
		e.ok("vm", "start", "big")
		b.StartTimer()
	}
	b.StopTimer()
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	b.ReportMetric(float64(bytes), "snapshot-bytes-on-disk")
	b.ReportMetric(float64(mem), "guest-memory-bytes")
	b.ReportMetric(float64(ds[len(ds)/2].Microseconds())/1000, "suspend-median-ms")
	e.ok("vm", "delete", "big")
}
