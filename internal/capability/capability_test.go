package capability

import (
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeFile(t *testing.T, path, body string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// testPaths points every probe into dir, where nothing exists yet.
func testPaths(dir string) Paths {
	return Paths{
		DMControl:   filepath.Join(dir, "dev/mapper/control"),
		KVMDev:      filepath.Join(dir, "dev/kvm"),
		TunDev:      filepath.Join(dir, "dev/net/tun"),
		LoopControl: filepath.Join(dir, "dev/loop-control"),
		ProcMisc:    filepath.Join(dir, "proc/misc"),
		SysModule:   filepath.Join(dir, "sys/module"),
		ModulesDir:  filepath.Join(dir, "lib/modules/6.1.0-test"),
		ProcConfig:  filepath.Join(dir, "proc/config.gz"),
		CPUInfo:     filepath.Join(dir, "proc/cpuinfo"),
	}
}

// TestDeviceMapperProbe: a node that is not a device-mapper control device
// (here /dev/null, as a stale node without the driver behind it) is
// refused by the ioctl; a missing node counts only if the kernel lists
// the driver.
func TestDeviceMapperProbe(t *testing.T) {
	p := testPaths(t.TempDir())
	p.DMControl = "/dev/null"
	if _, err := p.DeviceMapper(); !IsUnavailable(err) || !strings.Contains(err.Error(), "does not answer DM_VERSION") {
		t.Fatalf("/dev/null as control: %v", err)
	}
	p = testPaths(t.TempDir())
	if _, err := p.DeviceMapper(); !IsUnavailable(err) || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("no node, no driver: %v", err)
	}
	writeFile(t, p.ProcMisc, "237 loop-control\n236 device-mapper\n")
	if v, err := p.DeviceMapper(); err != nil || !strings.Contains(v, "registered") {
		t.Fatalf("driver registered, node missing: %q %v", v, err)
	}
}

// TestDMSnapshots: the dm driver needs device-mapper and a snapshot target
// that is loaded, built in or installed (what storage.Detect and doctor use).
func TestDMSnapshots(t *testing.T) {
	tests := []struct {
		name   string
		setup  func(p Paths)
		ok     bool
		reason string
	}{
		{"no device-mapper", func(Paths) {}, false, "device-mapper unavailable"},
		{"loaded", func(p Paths) { os.MkdirAll(filepath.Join(p.SysModule, "dm_snapshot"), 0o755) }, true, "snapshot target loaded"},
		{"builtin", func(p Paths) {
			writeFile(t, filepath.Join(p.ModulesDir, "modules.builtin"), "kernel/drivers/md/dm-snapshot.ko\n")
		}, true, "built into the kernel"},
		{"loadable", func(p Paths) {
			writeFile(t, filepath.Join(p.ModulesDir, "modules.dep"), "kernel/drivers/md/dm-snapshot.ko.xz: kernel/drivers/md/dm-bufio.ko.xz\n")
		}, true, "loaded on first use"},
		{"other module only", func(p Paths) {
			writeFile(t, filepath.Join(p.ModulesDir, "modules.dep"), "kernel/drivers/md/dm-snapshot-extra.ko: \n")
		}, false, "no snapshot target"},
		{"no target", func(Paths) {}, false, "no snapshot target"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := testPaths(t.TempDir())
			if tt.name != "no device-mapper" {
				writeFile(t, p.ProcMisc, "236 device-mapper\n")
			}
			tt.setup(p)
			how, err := p.DMSnapshots()
			text := how
			if err != nil {
				text = err.Error()
			}
			if (err == nil) != tt.ok || !strings.Contains(text, tt.reason) {
				t.Fatalf("DMSnapshots = %q, %v; want ok=%v ~%q", how, err, tt.ok, tt.reason)
			}
		})
	}
}

func TestKVMAndTunProbes(t *testing.T) {
	p := testPaths(t.TempDir())
	if err := p.KVM(); !IsUnavailable(err) || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("missing /dev/kvm: %v", err)
	}
	p.KVMDev = "/dev/null"
	if err := p.KVM(); !IsUnavailable(err) || !strings.Contains(err.Error(), "does not answer KVM_GET_API_VERSION") {
		t.Fatalf("/dev/null as /dev/kvm: %v", err)
	}
	if err := p.Tun(); !IsUnavailable(err) || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("missing tun: %v", err)
	}
	if _, err := p.Loop(); !IsUnavailable(err) {
		t.Fatalf("no loop: %v", err)
	}
	writeFile(t, p.ProcMisc, "237 loop-control\n")
	if how, err := p.Loop(); err != nil || !strings.Contains(how, "registered") {
		t.Fatalf("loop registered: %q %v", how, err)
	}
}

// TestNFTablesRecords: without CAP_NET_ADMIN the probe reads the kernel's
// own records; built in (no /sys/module entry) counts.
func TestNFTablesRecords(t *testing.T) {
	p := testPaths(t.TempDir())
	if how := p.nftRecords(); how != "" {
		t.Fatalf("nothing there, got %q", how)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte("CONFIG_NET=y\nCONFIG_NF_TABLES=y\n"))
	zw.Close()
	writeFile(t, p.ProcConfig, gz.String())
	if how := p.nftRecords(); !strings.Contains(how, "built into the kernel") {
		t.Fatalf("config.gz says built in, got %q", how)
	}
	p = testPaths(t.TempDir())
	writeFile(t, filepath.Join(p.ModulesDir, "modules.dep"), "kernel/net/netfilter/nf_tables.ko.zst: kernel/net/netfilter/nfnetlink.ko.zst\n")
	if how := p.nftRecords(); !strings.Contains(how, "loads on first use") {
		t.Fatalf("module installed, got %q", how)
	}
}

// TestNFTablesLive asks this kernel. As root the netlink query either
// answers or says nf_tables is missing; it must never fail to run.
func TestNFTablesLive(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: nfnetlink answers only CAP_NET_ADMIN")
	}
	how, err := NFTables()
	if err != nil && !IsUnavailable(err) {
		t.Fatalf("probe failed to run: %v", err)
	}
	if err == nil && how != "nf_tables answers over netlink" {
		t.Fatalf("as root the answer comes from netlink, got %q", how)
	}
	t.Logf("nf_tables: %q %v", how, err)
}

func TestDetectPVM(t *testing.T) {
	p := testPaths(t.TempDir())
	writeFile(t, p.CPUInfo, "processor\t: 0\nflags\t\t: fpu vme de pse hypervisor lahf_lm\n\nprocessor\t: 1\nflags\t\t: fpu\n")
	if got := p.DetectPVM(); got.Active || got.Module {
		t.Fatalf("no module: %+v", got)
	}
	os.MkdirAll(filepath.Join(p.SysModule, "kvm_pvm"), 0o755)
	if got := p.DetectPVM(); !got.Active {
		t.Fatalf("kvm_pvm and no vmx: %+v", got)
	}
	writeFile(t, p.CPUInfo, "flags\t\t: fpu vmx ept\n")
	if got := p.DetectPVM(); got.Active || got.HWFlag != "vmx" {
		t.Fatalf("vmx present: %+v", got)
	}
}

func TestKernelConfig(t *testing.T) {
	dir := t.TempDir()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte("CONFIG_PVM_GUEST=y\n# CONFIG_X86_PIE is not set\nCONFIG_LOCALVERSION=\"-fc\"\n"))
	zw.Close()
	k := writeFile(t, filepath.Join(dir, "vmlinux"), "\x7fELF junk IKCFG_ST"+gz.String()+"IKCFG_ED more")
	cfg, err := KernelConfig(k)
	if err != nil {
		t.Fatal(err)
	}
	if ConfigValue(cfg, "CONFIG_PVM_GUEST") != "y" || ConfigValue(cfg, "CONFIG_X86_PIE") != "" || ConfigValue(cfg, "CONFIG_LOCALVERSION") != "-fc" {
		t.Fatalf("config %q", cfg)
	}
	plain := writeFile(t, filepath.Join(dir, "plain"), "\x7fELF no config here")
	if _, err := KernelConfig(plain); err != ErrNoEmbeddedConfig {
		t.Fatalf("no config: %v", err)
	}
}
