package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestErrorShapes(t *testing.T) {
	p := startFC(t, fcOpts{})
	kernel, rootfs := p.files()
	tests := []struct {
		name, method, path, body, fault string
	}{
		{"unknown path", "GET", "/foo", "", "Invalid request method and/or path: GET foo."},
		{"unknown nested path", "GET", "/foo/bar", "", "Invalid request method and/or path: GET foo."},
		{"wrong method", "DELETE", "/machine-config", "", "Invalid request method and/or path: DELETE machine-config."},
		{"GET on a PUT-only path", "GET", "/boot-source", "", "Invalid request method and/or path: GET boot-source."},
		{"PUT without body", "PUT", "/machine-config", "", "Empty PUT request."},
		{"PATCH without body", "PATCH", "/machine-config", "", "Empty PATCH request."},
		{"GET with body", "GET", "/machine-config", `{}`, "GET request cannot have a body."},
		{"not json", "PUT", "/machine-config", `vcpu_count=2`, "invalid character"},
		{"trailing data", "PUT", "/machine-config", `{"vcpu_count":2,"mem_size_mib":128} {}`, "trailing characters"},
		{"unknown field", "PUT", "/machine-config", `{"vcpu_count":2,"mem_size_mib":128,"cpus":2}`, "unknown field `cpus`"},
		{"field in wrong case", "PUT", "/machine-config", `{"Vcpu_Count":2,"mem_size_mib":128}`, "unknown field `Vcpu_Count`"},
		{"missing required", "PUT", "/machine-config", `{"vcpu_count":2}`, "missing field `mem_size_mib`"},
		{"null required", "PUT", "/machine-config", `{"vcpu_count":null,"mem_size_mib":128}`, "missing field `vcpu_count`"},
		{"wrong type", "PUT", "/machine-config", `{"vcpu_count":"2","mem_size_mib":128}`, "cannot unmarshal string"},
		{"vcpu 0", "PUT", "/machine-config", `{"vcpu_count":0,"mem_size_mib":128}`, "The vCPU number is invalid!"},
		{"vcpu 33", "PUT", "/machine-config", `{"vcpu_count":33,"mem_size_mib":128}`, "The vCPU number is invalid!"},
		{"vcpu negative", "PUT", "/machine-config", `{"vcpu_count":-1,"mem_size_mib":128}`, "cannot unmarshal number -1"},
		{"smt odd", "PUT", "/machine-config", `{"vcpu_count":3,"mem_size_mib":128,"smt":true}`, "The vCPU number is invalid!"},
		{"memory 0", "PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":0}`, "The memory size (MiB) is invalid."},
		{"bad enum", "PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":128,"huge_pages":"1G"}`, "unknown variant `1G`"},
		{"empty PATCH", "PATCH", "/machine-config", `{}`, "Empty PATCH request."},
		{"kernel missing", "PUT", "/boot-source", `{"kernel_image_path":"/nonexistent/vmlinux"}`, "No such file or directory (os error 2)"},
		{"boot-source without kernel", "PUT", "/boot-source", `{"boot_args":"x"}`, "missing field `kernel_image_path`"},
		{"initrd missing", "PUT", "/boot-source", fmt.Sprintf(`{"kernel_image_path":%q,"initrd_path":"/nonexistent/initrd"}`, kernel), "initrd"},
		{"drive id with dash", "PUT", "/drives/root-fs", `{"drive_id":"root-fs","path_on_host":"x","is_root_device":true}`, "alphanumeric characters and underscores"},
		{"drive id mismatch", "PUT", "/drives/a", `{"drive_id":"b","path_on_host":"x","is_root_device":true}`, "does not match the id from the body"},
		{"drive without id in path", "PUT", "/drives", `{"drive_id":"b","path_on_host":"x","is_root_device":true}`, "Empty ID"},
		{"drive missing is_root_device", "PUT", "/drives/a", fmt.Sprintf(`{"drive_id":"a","path_on_host":%q}`, rootfs), "missing field `is_root_device`"},
		{"drive missing file", "PUT", "/drives/a", `{"drive_id":"a","path_on_host":"/nonexistent/disk","is_root_device":false}`, "BackingFile(No such file or directory (os error 2)"},
		{"drive bad cache type", "PUT", "/drives/a", fmt.Sprintf(`{"drive_id":"a","path_on_host":%q,"is_root_device":false,"cache_type":"Fast"}`, rootfs), "unknown variant `Fast`"},
		{"rate limiter bucket without size", "PUT", "/drives/a", fmt.Sprintf(`{"drive_id":"a","path_on_host":%q,"is_root_device":false,"rate_limiter":{"bandwidth":{"refill_time":100}}}`, rootfs), "missing field `size`"},
		{"rate limiter unknown field", "PUT", "/drives/a", fmt.Sprintf(`{"drive_id":"a","path_on_host":%q,"is_root_device":false,"rate_limiter":{"bw":{}}}`, rootfs), "unknown field `bw`"},
		{"net missing host_dev_name", "PUT", "/network-interfaces/eth0", `{"iface_id":"eth0"}`, "missing field `host_dev_name`"},
		{"net bad mac", "PUT", "/network-interfaces/eth0", `{"iface_id":"eth0","host_dev_name":"tap0","guest_mac":"zz"}`, "Invalid MAC"},
		{"net mtu too small", "PUT", "/network-interfaces/eth0", `{"iface_id":"eth0","host_dev_name":"tap0","mtu":20}`, "Invalid MTU"},
		{"vsock missing cid", "PUT", "/vsock", `{"uds_path":"v.sock"}`, "missing field `guest_cid`"},
		{"metrics missing path", "PUT", "/metrics", `{}`, "missing field `metrics_path`"},
		{"logger bad level", "PUT", "/logger", `{"level":"Loud"}`, "unknown variant `Loud`"},
		{"unknown action", "PUT", "/actions", `{"action_type":"Reboot"}`, "unknown variant `Reboot`"},
		{"action missing", "PUT", "/actions", `{}`, "missing field `action_type`"},
		{"start without kernel", "PUT", "/actions", `{"action_type":"InstanceStart"}`, "Start microvm error: Cannot start microvm without kernel configuration."},
		{"flush metrics before boot", "PUT", "/actions", `{"action_type":"FlushMetrics"}`, "not supported before starting the microVM"},
		{"pause before boot", "PATCH", "/vm", `{"state":"Paused"}`, "not supported before starting the microVM"},
		{"bad vm state", "PATCH", "/vm", `{"state":"Stopped"}`, "unknown variant `Stopped`"},
		{"patch drive before boot", "PATCH", "/drives/a", `{"drive_id":"a"}`, "not supported before starting the microVM"},
		{"snapshot create before boot", "PUT", "/snapshot/create", `{"snapshot_path":"s","mem_file_path":"m"}`, "not supported before starting the microVM"},
		{"snapshot load with both mem fields", "PUT", "/snapshot/load", `{"snapshot_path":"s","mem_file_path":"m","mem_backend":{"backend_type":"File","backend_path":"m"}}`, "Exactly one of"},
		{"unmodelled endpoint", "PUT", "/entropy", `{}`, "fcfake does not implement"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := p.do(tt.method, tt.path, tt.body)
			if r.status == 404 {
				t.Fatal("404: Firecracker never answers 404")
			}
			if got := r.header.Get("Server"); got != "Firecracker API" {
				t.Errorf("Server header %q", got)
			}
			if ct := r.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			var f map[string]string
			if r.status != 400 || json.Unmarshal([]byte(r.body), &f) != nil || len(f) != 1 || !strings.Contains(f["fault_message"], tt.fault) {
				t.Errorf("got %d %s, want 400 {\"fault_message\":...%q...}", r.status, r.body, tt.fault)
			}
		})
	}
	// None of the failures changed anything.
	if r := p.do("GET", "/machine-config", ""); r.body != `{"vcpu_count":1,"mem_size_mib":128,"smt":false,"track_dirty_pages":false,"huge_pages":"None"}` {
		t.Errorf("machine-config after failures: %s", r.body)
	}
	if p.exited() {
		t.Error("process exited during bad requests")
	}
}

func TestInfoAndMachineConfig(t *testing.T) {
	p := startFC(t, fcOpts{})
	r := p.do("GET", "/", "")
	if r.status != 200 || r.body != `{"app_name":"Firecracker","id":"test-vm","state":"Not started","vmm_version":"1.16.1"}` {
		t.Errorf("GET / = %d %s", r.status, r.body)
	}
	if r := p.do("GET", "/version", ""); r.body != `{"firecracker_version":"1.16.1"}` {
		t.Errorf("GET /version = %s", r.body)
	}
	steps := []struct{ method, body, want string }{
		{"PUT", `{"vcpu_count":2,"mem_size_mib":512,"smt":true,"track_dirty_pages":true}`, `{"vcpu_count":2,"mem_size_mib":512,"smt":true,"track_dirty_pages":true,"huge_pages":"None"}`},
		{"PATCH", `{"mem_size_mib":1024}`, `{"vcpu_count":2,"mem_size_mib":1024,"smt":true,"track_dirty_pages":true,"huge_pages":"None"}`},
		// PUT resets the optional fields to their defaults.
		{"PUT", `{"vcpu_count":4,"mem_size_mib":256}`, `{"vcpu_count":4,"mem_size_mib":256,"smt":false,"track_dirty_pages":false,"huge_pages":"None"}`},
	}
	for _, s := range steps {
		p.ok(s.method, "/machine-config", s.body)
		if got := p.do("GET", "/machine-config", "").body; got != s.want {
			t.Errorf("after %s %s: GET /machine-config = %s, want %s", s.method, s.body, got, s.want)
		}
	}
}

func TestBootStateMachine(t *testing.T) {
	p := startFC(t, fcOpts{})
	kernel, rootfs := p.files()
	other := filepath.Join(p.dir, "data.ext4")
	os.WriteFile(other, nil, 0o644)
	p.ok("PUT", "/logger", fmt.Sprintf(`{"log_path":%q,"level":"debug","show_level":true}`, filepath.Join(p.dir, "fc.log")))
	p.ok("PUT", "/metrics", fmt.Sprintf(`{"metrics_path":%q}`, filepath.Join(p.dir, "metrics.json")))
	p.fault("PUT", "/metrics", fmt.Sprintf(`{"metrics_path":%q}`, filepath.Join(p.dir, "m2.json")), "Reinitialization of metrics not allowed.")
	p.ok("PUT", "/boot-source", fmt.Sprintf(`{"kernel_image_path":%q,"boot_args":"console=ttyS0 reboot=k panic=1 ip=172.16.0.2::172.16.0.1:255.255.255.0:devbox:eth0:off:1.1.1.1"}`, kernel))
	p.ok("PUT", "/drives/rootfs", fmt.Sprintf(`{"drive_id":"rootfs","path_on_host":%q,"is_root_device":true,"is_read_only":false}`, rootfs))
	p.ok("PUT", "/drives/rootfs", fmt.Sprintf(`{"drive_id":"rootfs","path_on_host":%q,"is_root_device":true,"is_read_only":true}`, rootfs)) // replaces
	p.fault("PUT", "/drives/second", fmt.Sprintf(`{"drive_id":"second","path_on_host":%q,"is_root_device":true}`, other), "A root block device already exists!")
	p.ok("PUT", "/drives/data", fmt.Sprintf(`{"drive_id":"data","path_on_host":%q,"is_root_device":false}`, other))
	p.ok("PUT", "/actions", `{"action_type":"InstanceStart"}`)
	if got := p.instanceState(); got != "Running" {
		t.Errorf("state %q, want Running", got)
	}
	for _, c := range []struct{ method, path, body string }{
		{"PUT", "/actions", `{"action_type":"InstanceStart"}`},
		{"PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":128}`},
		{"PATCH", "/machine-config", `{"vcpu_count":1}`},
		{"PUT", "/boot-source", fmt.Sprintf(`{"kernel_image_path":%q}`, kernel)},
		{"PUT", "/drives/x", fmt.Sprintf(`{"drive_id":"x","path_on_host":%q,"is_root_device":false}`, other)},
		{"PUT", "/network-interfaces/eth0", `{"iface_id":"eth0","host_dev_name":"tap0"}`},
		{"PUT", "/vsock", `{"guest_cid":3,"uds_path":"v.sock"}`},
		{"PUT", "/logger", `{"level":"Info"}`},
		{"PUT", "/metrics", `{"metrics_path":"m"}`},
	} {
		p.fault(c.method, c.path, c.body, "not supported after starting the microVM")
	}
	// Post-boot operations.
	p.ok("PATCH", "/drives/data", fmt.Sprintf(`{"drive_id":"data","path_on_host":%q}`, rootfs))
	p.fault("PATCH", "/drives/nope", `{"drive_id":"nope"}`, "not found")
	p.ok("PUT", "/actions", `{"action_type":"FlushMetrics"}`)
	p.ok("PATCH", "/vm", `{"state":"Paused"}`)
	p.ok("PATCH", "/vm", `{"state":"Paused"}`) // idempotent
	if got := p.instanceState(); got != "Paused" {
		t.Errorf("state %q, want Paused", got)
	}
	p.ok("PATCH", "/vm", `{"state":"Resumed"}`)
	if got := p.instanceState(); got != "Running" {
		t.Errorf("state %q, want Running", got)
	}

	console := p.stdout.String()
	for _, want := range []string{
		"Command line: console=ttyS0 reboot=k panic=1 ip=172.16.0.2::172.16.0.1:255.255.255.0:devbox:eth0:off:1.1.1.1 pci=off root=/dev/vda ro virtio_mmio.device=4K@0xd0000000:5",
		"fcfake guest devbox ttyS0",
	} {
		if !strings.Contains(console, want) {
			t.Errorf("console %q does not contain %q", console, want)
		}
	}
	log, _ := os.ReadFile(filepath.Join(p.dir, "fc.log"))
	if !strings.Contains(string(log), "[test-vm:main:INFO] vCPUs running") {
		t.Errorf("log %q has no vCPUs running line", log)
	}
	metrics, _ := os.ReadFile(filepath.Join(p.dir, "metrics.json"))
	if !json.Valid([]byte(strings.TrimSpace(string(metrics)))) || len(metrics) == 0 {
		t.Errorf("metrics after FlushMetrics: %q", metrics)
	}
}

// TestDrivePermissions runs the fake as an unprivileged user: a drive it
// cannot open read-write fails at PUT time, as with the real one.
func TestDrivePermissions(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs fcfake as uid 65534 to check permission errors")
	}
	dir := shortDir(t)
	os.Chmod(dir, 0o777)
	disk := filepath.Join(dir, "root.img")
	os.WriteFile(disk, []byte("x"), 0o644) // root-owned: readable, not writable, by 65534
	p := startFC(t, fcOpts{dir: dir, cred: &syscall.Credential{Uid: 65534, Gid: 65534}})
	p.fault("PUT", "/drives/rootfs", fmt.Sprintf(`{"drive_id":"rootfs","path_on_host":%q,"is_root_device":true,"is_read_only":false}`, disk),
		"Permission denied (os error 13)")
	p.ok("PUT", "/drives/rootfs", fmt.Sprintf(`{"drive_id":"rootfs","path_on_host":%q,"is_root_device":true,"is_read_only":true}`, disk))
}

func TestMaxPayload(t *testing.T) {
	p := startFC(t, fcOpts{extra: []string{"--http-api-max-payload-size", "64"}})
	big := fmt.Sprintf(`{"vcpu_count":1,"mem_size_mib":128,"cpu_template":"None"%s}`, strings.Repeat(" ", 64))
	p.fault("PUT", "/machine-config", big, "is larger than the limit of 64")
	p.ok("PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":128}`)
}

func TestSnapshots(t *testing.T) {
	p := startFC(t, fcOpts{})
	p.boot(ptr("console=ttyS0 reboot=k"))
	snap, mem := filepath.Join(p.dir, "vm.snap"), filepath.Join(p.dir, "vm.mem")
	body := fmt.Sprintf(`{"snapshot_path":%q,"mem_file_path":%q}`, snap, mem)
	p.fault("PUT", "/snapshot/create", body, "not paused")
	p.ok("PATCH", "/vm", `{"state":"Paused"}`)
	p.fault("PUT", "/snapshot/create", fmt.Sprintf(`{"snapshot_path":%q,"mem_file_path":%q,"snapshot_type":"Diff"}`, snap, mem), "dirty page tracking disabled")
	p.ok("PUT", "/snapshot/create", body)
	if got := p.instanceState(); got != "Paused" {
		t.Errorf("state after snapshot %q, want Paused", got)
	}
	if fi, err := os.Stat(mem); err != nil || fi.Size() != 256<<20 {
		t.Fatalf("memory file: %v %v, want 256 MiB", fi, err)
	}

	// A fresh process loads it; resume_vm makes it Running.
	q := startFC(t, fcOpts{})
	q.ok("PUT", "/logger", fmt.Sprintf(`{"log_path":%q}`, filepath.Join(q.dir, "fc.log")))
	q.ok("PUT", "/snapshot/load", fmt.Sprintf(`{"snapshot_path":%q,"mem_backend":{"backend_type":"File","backend_path":%q},"resume_vm":true}`, snap, mem))
	if got := q.instanceState(); got != "Running" {
		t.Errorf("state after load with resume_vm %q, want Running", got)
	}
	q.fault("PUT", "/snapshot/load", fmt.Sprintf(`{"snapshot_path":%q,"mem_file_path":%q}`, snap, mem), "not allowed after configuring boot-specific resources")
	q.ok("PUT", "/actions", `{"action_type":"SendCtrlAltDel"}`) // the restored kernel line has reboot=k
	if st, ok := q.wait(3 * time.Second); !ok || st.ExitCode() != 0 {
		t.Errorf("restored VM after SendCtrlAltDel: %v %v, want exit 0", st, ok)
	}

	// Loading after a boot resource is refused (not fatal).
	r := startFC(t, fcOpts{})
	r.ok("PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":128}`)
	r.fault("PUT", "/snapshot/load", fmt.Sprintf(`{"snapshot_path":%q,"mem_file_path":%q}`, snap, mem), "Loading a microVM snapshot not allowed after configuring boot-specific resources.")
	if r.exited() {
		t.Error("a refused load killed the process")
	}

	// A failed restore is fatal: 400, then exit 1.
	f := startFC(t, fcOpts{})
	f.fault("PUT", "/snapshot/load", fmt.Sprintf(`{"snapshot_path":%q,"mem_file_path":%q}`, filepath.Join(f.dir, "missing.snap"), mem), "Load snapshot error")
	if st, ok := f.wait(3 * time.Second); !ok || st.ExitCode() != 1 {
		t.Errorf("after a failed restore: %v %v, want exit 1", st, ok)
	}
}

func TestConfigFile(t *testing.T) {
	dir := shortDir(t)
	kernel, rootfs := filepath.Join(dir, "vmlinux"), filepath.Join(dir, "root.img")
	os.WriteFile(kernel, nil, 0o644)
	os.WriteFile(rootfs, nil, 0o644)
	cfg := filepath.Join(dir, "vm.json")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`{
  "boot-source": {"kernel_image_path": %q, "boot_args": "console=ttyS0 reboot=k"},
  "drives": [{"drive_id": "rootfs", "path_on_host": %q, "is_root_device": true, "is_read_only": false}],
  "machine-config": {"vcpu_count": 2, "mem_size_mib": 256}
}`, kernel, rootfs)), 0o644)

	p := startFC(t, fcOpts{dir: dir, extra: []string{"--config-file", cfg}})
	if got := p.instanceState(); got != "Running" {
		t.Fatalf("state %q, want Running right after a config-file boot", got)
	}
	p.fault("PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":128}`, "not supported after starting")

	// --no-api: no socket, the VM runs until the guest reboots.
	noAPI := exec.Command(fcBin, "--no-api", "--config-file", cfg, "--api-sock", filepath.Join(dir, "none.sock"))
	if err := noAPI.Start(); err != nil {
		t.Fatal(err)
	}
	defer noAPI.Process.Kill()
	time.Sleep(300 * time.Millisecond)
	if _, err := os.Stat(filepath.Join(dir, "none.sock")); err == nil {
		t.Error("--no-api created an API socket")
	}
	if noAPI.ProcessState != nil {
		t.Error("--no-api process exited")
	}

	// A bad config file is exit 1.
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"boot-source": {"kernel_image_path": "/nonexistent"}}`), 0o644)
	cmd := exec.Command(fcBin, "--api-sock", filepath.Join(dir, "bad.sock"), "--config-file", bad)
	out, _ := cmd.CombinedOutput()
	if cmd.ProcessState.ExitCode() != 1 || !strings.Contains(string(out), "Building VMM configured from cmdline json failed") {
		t.Errorf("bad config: exit %d output %q", cmd.ProcessState.ExitCode(), out)
	}
}
