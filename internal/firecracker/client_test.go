package firecracker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

type recorded struct {
	Method, Path, Body string
	Header             http.Header
}

// fakeAPI is a Firecracker-shaped HTTP server on a unix socket that records
// every request and answers through respond (default: 204, or 200 + "{}"
// for a GET).
type fakeAPI struct {
	sock    string
	mu      sync.Mutex
	reqs    []recorded
	respond func(r *http.Request, body []byte) (int, string)
	srv     *http.Server
}

func newFakeAPI(t testing.TB, sock string, respond func(*http.Request, []byte) (int, string)) *fakeAPI {
	t.Helper()
	f := &fakeAPI{sock: sock, respond: respond}
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	f.srv = &http.Server{Handler: http.HandlerFunc(f.serve)}
	go f.srv.Serve(ln)
	t.Cleanup(func() { f.srv.Close() })
	return f
}

func (f *fakeAPI) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.reqs = append(f.reqs, recorded{r.Method, r.URL.Path, string(body), r.Header.Clone()})
	f.mu.Unlock()
	status, out := http.StatusNoContent, ""
	if r.Method == http.MethodGet {
		status, out = http.StatusOK, "{}"
	}
	if f.respond != nil {
		status, out = f.respond(r, body)
	}
	w.Header().Set("Server", "Firecracker API")
	if out != "" {
		w.Header().Set("Content-Type", "application/json")
	}
	w.WriteHeader(status)
	io.WriteString(w, out)
}

func (f *fakeAPI) requests() []recorded {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]recorded(nil), f.reqs...)
}

func TestClientRequestBodies(t *testing.T) {
	cmdline := KernelCmdline("ip=172.16.0.2::172.16.0.1:255.255.255.0:dev:eth0:off:1.1.1.1")
	tests := []struct {
		name string
		call func(context.Context, *Client) error
	}{
		{"machine_config", func(ctx context.Context, c *Client) error {
			return c.PutMachineConfig(ctx, MachineConfig{VCPUCount: 2, MemSizeMib: 1024, SMT: ptr(false), TrackDirtyPages: ptr(true), HugePages: "None"})
		}},
		{"machine_config_minimal", func(ctx context.Context, c *Client) error {
			return c.PutMachineConfig(ctx, MachineConfig{VCPUCount: 1, MemSizeMib: 128})
		}},
		{"boot_source", func(ctx context.Context, c *Client) error {
			return c.PutBootSource(ctx, BootSource{KernelImagePath: "/state/images/default/vmlinux", BootArgs: cmdline})
		}},
		{"boot_source_initrd", func(ctx context.Context, c *Client) error {
			return c.PutBootSource(ctx, BootSource{KernelImagePath: "/k/vmlinuz", InitrdPath: "/k/initrd.img"})
		}},
		{"drive_root", func(ctx context.Context, c *Client) error {
			return c.PutDrive(ctx, Drive{DriveID: "rootfs", PathOnHost: "/dev/mapper/banger-abc", IsRootDevice: true})
		}},
		{"drive_work_limited", func(ctx context.Context, c *Client) error {
			return c.PutDrive(ctx, Drive{DriveID: "work", PathOnHost: "/state/vms/abc/work.ext4", IsReadOnly: true,
				CacheType: "Writeback", IOEngine: "Sync",
				RateLimiter: &RateLimiter{Bandwidth: &TokenBucket{Size: 1 << 20, RefillTime: 1000, OneTimeBurst: ptr(int64(0))}}})
		}},
		{"network_interface", func(ctx context.Context, c *Client) error {
			return c.PutNetworkInterface(ctx, NetworkInterface{IfaceID: "eth0", HostDevName: "bgt-abc123", GuestMAC: "06:00:ac:10:00:02"})
		}},
		{"vsock", func(ctx context.Context, c *Client) error {
			return c.PutVsock(ctx, Vsock{GuestCID: 3, UDSPath: "/state/vms/abc/v.sock"})
		}},
		{"logger", func(ctx context.Context, c *Client) error {
			return c.PutLogger(ctx, Logger{LogPath: "/state/vms/abc/firecracker.log", Level: "Info", ShowLevel: ptr(true), ShowLogOrigin: ptr(false)})
		}},
		{"metrics", func(ctx context.Context, c *Client) error {
			return c.PutMetrics(ctx, Metrics{MetricsPath: "/state/vms/abc/metrics.json"})
		}},
		{"instance_start", func(ctx context.Context, c *Client) error { return c.InstanceStart(ctx) }},
		{"send_ctrl_alt_del", func(ctx context.Context, c *Client) error { return c.SendCtrlAltDel(ctx) }},
		{"flush_metrics", func(ctx context.Context, c *Client) error { return c.FlushMetrics(ctx) }},
		{"patch_vm_paused", func(ctx context.Context, c *Client) error { return c.PatchVM(ctx, VMPaused) }},
		{"patch_vm_resumed", func(ctx context.Context, c *Client) error { return c.PatchVM(ctx, VMResumed) }},
		{"snapshot_create", func(ctx context.Context, c *Client) error {
			return c.CreateSnapshot(ctx, SnapshotCreate{SnapshotPath: "/s/vm.snap", MemFilePath: "/s/vm.mem", SnapshotType: "Full"})
		}},
		{"snapshot_load", func(ctx context.Context, c *Client) error {
			return c.LoadSnapshot(ctx, SnapshotLoad{SnapshotPath: "/s/vm.snap",
				MemBackend: &MemoryBackend{BackendType: "File", BackendPath: "/s/vm.mem"}, ResumeVM: true,
				NetworkOverrides: []NetworkOverride{{IfaceID: "eth0", HostDevName: "bgt-def"}},
				VsockOverride:    &VsockOverride{UDSPath: "/s/v2.sock"}})
		}},
		{"snapshot_load_mem_file", func(ctx context.Context, c *Client) error {
			return c.LoadSnapshot(ctx, SnapshotLoad{SnapshotPath: "/s/vm.snap", MemFilePath: "/s/vm.mem"})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeAPI(t, filepath.Join(shortDir(t), "api.sock"), nil)
			if err := tt.call(t.Context(), NewClient(f.sock)); err != nil {
				t.Fatalf("call: %v", err)
			}
			reqs := f.requests()
			if len(reqs) != 1 {
				t.Fatalf("server saw %d requests, want 1", len(reqs))
			}
			r := reqs[0]
			if got := r.Header.Get("Content-Type"); got != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", got)
			}
			if got := r.Header.Get("Accept"); got != "application/json" {
				t.Errorf("Accept = %q, want application/json", got)
			}
			golden(t, tt.name, fmt.Sprintf("%s %s\n%s\n", r.Method, r.Path, r.Body))
		})
	}
}

func TestClientGets(t *testing.T) {
	f := newFakeAPI(t, filepath.Join(shortDir(t), "api.sock"), func(r *http.Request, _ []byte) (int, string) {
		switch r.URL.Path {
		case "/machine-config":
			return 200, `{"vcpu_count":1,"mem_size_mib":128,"smt":false,"track_dirty_pages":false,"huge_pages":"None"}`
		case "/":
			return 200, `{"id":"vm-1","state":"Not started","vmm_version":"1.16.1","app_name":"Firecracker"}`
		case "/version":
			return 200, `{"firecracker_version":"1.16.1"}`
		}
		return 400, `{"fault_message":"Invalid request method and/or path"}`
	})
	c := NewClient(f.sock)
	ctx := t.Context()
	m, err := c.GetMachineConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if m.VCPUCount != 1 || m.MemSizeMib != 128 || m.SMT == nil || *m.SMT || m.HugePages != "None" {
		t.Errorf("GetMachineConfig = %+v", m)
	}
	info, err := c.GetInstanceInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := (InstanceInfo{ID: "vm-1", State: StateNotStarted, VMMVersion: "1.16.1", AppName: "Firecracker"}); info != want {
		t.Errorf("GetInstanceInfo = %+v, want %+v", info, want)
	}
	v, err := c.GetVersion(ctx)
	if err != nil || v.FirecrackerVersion != "1.16.1" {
		t.Errorf("GetVersion = %+v, %v", v, err)
	}
	for _, r := range f.requests() {
		if r.Method != http.MethodGet || r.Body != "" {
			t.Errorf("%s %s sent body %q", r.Method, r.Path, r.Body)
		}
		if r.Header.Get("Content-Type") != "" || r.Header.Get("Accept") != "application/json" {
			t.Errorf("%s %s headers %v", r.Method, r.Path, r.Header)
		}
	}
}

func TestClientErrors(t *testing.T) {
	tests := []struct {
		name     string
		status   int
		body     string
		call     func(context.Context, *Client) error
		wantErr  string
		wantSent bool
	}{
		{"fault message", 400, `{"fault_message":"Invalid kernel path: No such file"}`,
			func(ctx context.Context, c *Client) error {
				return c.PutBootSource(ctx, BootSource{KernelImagePath: "/nope"})
			},
			"firecracker PUT /boot-source: 400: Invalid kernel path: No such file", true},
		{"raw body", 500, "internal oops\n",
			func(ctx context.Context, c *Client) error { return c.InstanceStart(ctx) },
			"firecracker PUT /actions: 500: internal oops", true},
		{"empty body", 400, "",
			func(ctx context.Context, c *Client) error { _, err := c.GetInstanceInfo(ctx); return err },
			"firecracker GET /: 400: Bad Request", true},
		{"bad json answer", 200, "not json",
			func(ctx context.Context, c *Client) error { _, err := c.GetMachineConfig(ctx); return err },
			"firecracker GET /machine-config: decoding response", true},
		{"bad drive id", 204, "",
			func(ctx context.Context, c *Client) error {
				return c.PutDrive(ctx, Drive{DriveID: "root-fs", PathOnHost: "/x"})
			},
			`drive id "root-fs" must match`, false},
		{"long tap name", 204, "",
			func(ctx context.Context, c *Client) error {
				return c.PutNetworkInterface(ctx, NetworkInterface{IfaceID: "eth0", HostDevName: "bgt-0123456789ab"})
			},
			"must be 1..15 characters", false},
		{"bad vm state", 204, "",
			func(ctx context.Context, c *Client) error { return c.PatchVM(ctx, "Running") },
			`state "Running" must be "Paused" or "Resumed"`, false},
		{"snapshot load both mem", 204, "",
			func(ctx context.Context, c *Client) error {
				return c.LoadSnapshot(ctx, SnapshotLoad{SnapshotPath: "/s", MemFilePath: "/m", MemBackend: &MemoryBackend{"File", "/m"}})
			},
			"exactly one of mem_backend and mem_file_path", false},
		{"snapshot load no mem", 204, "",
			func(ctx context.Context, c *Client) error {
				return c.LoadSnapshot(ctx, SnapshotLoad{SnapshotPath: "/s"})
			},
			"exactly one of mem_backend and mem_file_path", false},
		{"snapshot create no mem", 204, "",
			func(ctx context.Context, c *Client) error {
				return c.CreateSnapshot(ctx, SnapshotCreate{SnapshotPath: "/s"})
			},
			"both required", false},
		{"vsock path too long", 204, "",
			func(ctx context.Context, c *Client) error {
				return c.PutVsock(ctx, Vsock{GuestCID: 3, UDSPath: "/" + strings.Repeat("v", 107)})
			},
			"over the 107-byte limit", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeAPI(t, filepath.Join(shortDir(t), "api.sock"), func(*http.Request, []byte) (int, string) {
				return tt.status, tt.body
			})
			err := tt.call(t.Context(), NewClient(f.sock))
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not contain %q", err, tt.wantErr)
			}
			if sent := len(f.requests()) > 0; sent != tt.wantSent {
				t.Errorf("request sent = %v, want %v", sent, tt.wantSent)
			}
		})
	}
}

func TestAPIErrorAs(t *testing.T) {
	f := newFakeAPI(t, filepath.Join(shortDir(t), "api.sock"), func(*http.Request, []byte) (int, string) {
		return 400, `{"fault_message":"The requested operation is not supported after starting the microVM."}`
	})
	err := NewClient(f.sock).PutMachineConfig(t.Context(), MachineConfig{VCPUCount: 1, MemSizeMib: 128})
	var ae *APIError
	if !errors.As(err, &ae) {
		t.Fatalf("error %v is not an *APIError", err)
	}
	want := APIError{Method: "PUT", Path: "/machine-config", Status: 400, FaultMessage: "The requested operation is not supported after starting the microVM."}
	if *ae != want {
		t.Errorf("APIError = %+v, want %+v", *ae, want)
	}
}

func TestClientContext(t *testing.T) {
	f := newFakeAPI(t, filepath.Join(shortDir(t), "api.sock"), func(r *http.Request, _ []byte) (int, string) {
		<-r.Context().Done() // hang like a stuck Firecracker until the client gives up
		return 204, ""
	})
	c := NewClient(f.sock)

	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := c.InstanceStart(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("hung call: error %v, want context.DeadlineExceeded", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("hung call returned after %s", took)
	}

	ctx, cancel = context.WithCancel(t.Context())
	cancel()
	before := len(f.requests())
	if err := c.SendCtrlAltDel(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled call: error %v, want context.Canceled", err)
	}
	if len(f.requests()) != before {
		t.Error("a cancelled call still reached the server")
	}
}

func TestClientMissingSocket(t *testing.T) {
	sock := filepath.Join(shortDir(t), "none.sock")
	_, err := NewClient(sock).GetMachineConfig(t.Context())
	if err == nil {
		t.Fatal("no error for a missing socket")
	}
	mustContain(t, err.Error(), "GET /machine-config", sock, "no such file")
}

// A new Firecracker on the same socket path must be reachable by the same
// Client: no connection is kept from the old process.
func TestClientSurvivesProcessReplacement(t *testing.T) {
	sock := filepath.Join(shortDir(t), "api.sock")
	f1 := newFakeAPI(t, sock, nil)
	c := NewClient(sock)
	if err := c.InstanceStart(t.Context()); err != nil {
		t.Fatal(err)
	}
	f1.srv.Close()
	f2 := newFakeAPI(t, sock, nil)
	if err := c.InstanceStart(t.Context()); err != nil {
		t.Fatalf("after replacement: %v", err)
	}
	if len(f2.requests()) != 1 {
		t.Errorf("new server saw %d requests, want 1", len(f2.requests()))
	}
}

func TestKernelCmdlineGolden(t *testing.T) {
	ip, err := IPArg(netip.MustParseAddr("172.16.0.2"), netip.MustParseAddr("172.16.0.1"), 24, "dev", netip.MustParseAddr("1.1.1.1"))
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "kernel_cmdline", KernelCmdline(ip)+"\n")
}

func TestKernelCmdline(t *testing.T) {
	tests := []struct {
		ip    string
		extra []string
		want  string
	}{
		{"ip=x", nil, kernelBase + " ip=x"},
		{"ip=x", []string{"quiet", "", " loglevel=3 "}, kernelBase + " ip=x quiet loglevel=3"},
		{"", nil, kernelBase},
	}
	for _, tt := range tests {
		if got := KernelCmdline(tt.ip, tt.extra...); got != tt.want {
			t.Errorf("KernelCmdline(%q, %q) = %q, want %q", tt.ip, tt.extra, got, tt.want)
		}
	}
	for _, w := range []string{"reboot=k", "console=ttyS0", "panic=1", "i8042.noaux", "i8042.nomux", "i8042.dumbkbd"} {
		mustContain(t, KernelCmdline(""), w)
	}
}

func TestIPArg(t *testing.T) {
	a := netip.MustParseAddr
	tests := []struct {
		name     string
		guest    netip.Addr
		gw       netip.Addr
		prefix   int
		host     string
		dns      netip.Addr
		want     string
		wantErrS string
	}{
		{"slash 24", a("10.0.0.5"), a("10.0.0.1"), 24, "dev", a("9.9.9.9"), "ip=10.0.0.5::10.0.0.1:255.255.255.0:dev:eth0:off:9.9.9.9", ""},
		{"slash 20 no dns", a("172.16.3.4"), a("172.16.0.1"), 20, "a-b", netip.Addr{}, "ip=172.16.3.4::172.16.0.1:255.255.240.0:a-b:eth0:off", ""},
		{"ipv6 guest", a("fd00::2"), a("10.0.0.1"), 24, "dev", netip.Addr{}, "", "must be IPv4"},
		{"bad prefix", a("10.0.0.5"), a("10.0.0.1"), 32, "dev", netip.Addr{}, "", "prefix length 32"},
		{"colon in name", a("10.0.0.5"), a("10.0.0.1"), 24, "a:b", netip.Addr{}, "", "hostname"},
		{"ipv6 dns", a("10.0.0.5"), a("10.0.0.1"), 24, "dev", a("::1"), "", "dns ::1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := IPArg(tt.guest, tt.gw, tt.prefix, tt.host, tt.dns)
			if tt.wantErrS != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErrS) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErrS)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("IPArg = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}
