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
	"testing"
	"time"

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
	var direct, forwarded time.Duration
	b.ResetTimer()
	for range b.N {
		direct += send(svc.Addr().String())
		forwarded += send(fw.addrs[0])
	}
	b.StopTimer()
	mbps := func(d time.Duration) float64 { return float64(size) * float64(b.N) / d.Seconds() / 1e6 }
	b.ReportMetric(mbps(direct), "direct-MB/s")
	b.ReportMetric(mbps(forwarded), "forward-MB/s")
	b.ReportMetric(mbps(forwarded)/mbps(direct), "ratio")
}
