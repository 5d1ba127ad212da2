package preflight

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"banger/internal/api"
	"banger/internal/capability"
	"banger/internal/config"
)

// standIns answer every probe as a healthy host would; a test changes the
// one it is about.
func standIns() Probes {
	return Probes{
		KVM:          func() error { return nil },
		Tun:          func() error { return nil },
		Loop:         func() (string, error) { return "loop-control registered by the kernel", nil },
		DeviceMapper: func() (string, error) { return "device-mapper 4.48.0, snapshot target loaded", nil },
		NFTables:     func() (string, error) { return "nf_tables answers over netlink", nil },
		PVM:          func() capability.PVM { return capability.PVM{HWFlag: "vmx"} },
		KernelConfig: func(string) (string, error) { return "", capability.ErrNoEmbeddedConfig },
	}
}

func unavailable(what, reason string) error {
	return &capability.Unavailable{What: what, Reason: reason}
}

func check(t *testing.T, env Env, name string) Result {
	t.Helper()
	return Run(context.Background(), env, name)[0]
}

// TestChecksWithStandIns: each capability check reports what its probe
// found, with the right status and fix.
func TestChecksWithStandIns(t *testing.T) {
	tests := []struct {
		name    string
		check   string
		cfg     func(*config.Config)
		probe   func(*Probes)
		status  string
		want    []string
		notWant []string
	}{
		{"kvm answers", KVM, nil, nil, Pass, []string{"answers"}, nil},
		{"kvm stale node", KVM, nil, func(p *Probes) {
			p.KVM = func() error {
				return unavailable("KVM", "/dev/kvm exists but the kernel has no KVM behind it (no such device)")
			}
		}, Fail, []string{"no KVM behind it", "load kvm_intel"}, nil},
		{"kvm not rw", KVM, nil, func(p *Probes) {
			p.KVM = func() error { return unavailable("KVM", "/dev/kvm is not read-write for this user") }
		}, Fail, []string{"not read-write", "usermod -aG kvm"}, nil},
		{"tun missing driver", Tun, nil, func(p *Probes) {
			p.Tun = func() error { return unavailable("tun", "/dev/net/tun exists but the kernel has no tun driver") }
		}, Fail, []string{"no tun driver", "modprobe tun"}, nil},
		{"tun not rw", Tun, nil, func(p *Probes) {
			p.Tun = func() error { return unavailable("tun", "/dev/net/tun is not read-write for this user") }
		}, Fail, []string{"chmod 0666"}, nil},
		{"loop missing", Loop, nil, func(p *Probes) {
			p.Loop = func() (string, error) { return "", unavailable("loop devices", "no loop driver") }
		}, Warn, []string{"no loop driver", "modprobe loop"}, nil},
		{"dm works", DeviceMapper, nil, nil, Pass, []string{"4.48.0", "dm storage driver usable"}, nil},
		{"dm node without driver", DeviceMapper, nil, func(p *Probes) {
			p.DeviceMapper = func() (string, error) {
				return "", unavailable("device-mapper", "the kernel has no device-mapper driver (opening /dev/mapper/control: no such device)")
			}
		}, Warn, []string{"no device-mapper driver", "copy storage driver is used"}, []string{"dm storage driver usable"}},
		{"dm insisted on but missing", DeviceMapper, func(c *config.Config) { c.StorageDriver = "dm" }, func(p *Probes) {
			p.DeviceMapper = func() (string, error) {
				return "", unavailable("device-mapper", "the kernel has no device-mapper driver")
			}
		}, Fail, []string{"storage_driver = dm but", "storage_driver = \"auto\""}, nil},
		{"dm not wanted", DeviceMapper, func(c *config.Config) { c.StorageDriver = "copy" }, func(p *Probes) {
			p.DeviceMapper = func() (string, error) { return "", unavailable("device-mapper", "no driver") }
		}, Pass, []string{"storage_driver = copy"}, nil},
		{"nftables built in", NAT, nil, nil, Pass, []string{"answers over netlink"}, []string{"modprobe", "not loaded"}},
		{"nftables unprivileged records", NAT, nil, func(p *Probes) {
			p.NFTables = func() (string, error) {
				return "nf_tables built into the kernel (/proc/config.gz) (not asked over netlink: that needs CAP_NET_ADMIN)", nil
			}
		}, Pass, []string{"built into the kernel", "CAP_NET_ADMIN"}, nil},
		{"nftables missing", NAT, nil, func(p *Probes) {
			p.NFTables = func() (string, error) {
				return "", unavailable("nf_tables", "the kernel does not know the nf_tables netlink subsystem")
			}
		}, Warn, []string{"does not know", "VMs without NAT work regardless", "CONFIG_NF_TABLES"}, nil},
		{"hardware virtualisation", PVM, nil, nil, Pass, []string{"vmx", "stock guest kernels work"}, nil},
		{"pvm host, kernel unknown", PVM, nil, func(p *Probes) {
			p.PVM = func() capability.PVM { return capability.PVM{Active: true, Module: true} }
		}, Warn, []string{"/dev/kvm is PVM", "CONFIG_PVM_GUEST=y", "CONFIG_X86_PIE=y", "PVM-capable Firecracker", "cannot tell"}, nil},
		{"pvm host, stock kernel", PVM, nil, func(p *Probes) {
			p.PVM = func() capability.PVM { return capability.PVM{Active: true, Module: true} }
			p.KernelConfig = func(string) (string, error) { return "CONFIG_X86_PIE=y\n# CONFIG_PVM_GUEST is not set\n", nil }
		}, Warn, []string{"lacks CONFIG_PVM_GUEST=y", "will not boot"}, []string{"CONFIG_X86_PIE=y and"}},
		{"pvm host, pvm kernel", PVM, nil, func(p *Probes) {
			p.PVM = func() capability.PVM { return capability.PVM{Active: true, Module: true} }
			p.KernelConfig = func(string) (string, error) { return "CONFIG_PVM_GUEST=y\nCONFIG_X86_PIE=y\n", nil }
		}, Warn, []string{"is a PVM guest kernel", "Firecracker must be a PVM-capable build"}, []string{"lacks"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := Env{Config: config.Config{StorageDriver: "auto", KernelPath: "/k/vmlinux"}, Probes: standIns()}
			if tt.cfg != nil {
				tt.cfg(&env.Config)
			}
			if tt.probe != nil {
				tt.probe(&env.Probes)
			}
			r := check(t, env, tt.check)
			text := r.Detail + " | " + r.Fix
			if r.Status != tt.status {
				t.Fatalf("status %s, want %s: %s", r.Status, tt.status, text)
			}
			for _, w := range tt.want {
				if !strings.Contains(text, w) {
					t.Errorf("missing %q in %q", w, text)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(text, w) {
					t.Errorf("unexpected %q in %q", w, text)
				}
			}
		})
	}
}

// TestErrNamesEveryFailure: the daemon's start error lists all failed
// checks at once and suggests ignoring only those worth ignoring.
func TestErrNamesEveryFailure(t *testing.T) {
	env := Env{
		Config: config.Config{FirecrackerBin: "/nonexistent/firecracker", KernelPath: "/nonexistent/vmlinux"},
		Probes: standIns(),
	}
	env.Probes.KVM = func() error { return unavailable("KVM", "/dev/kvm does not exist") }
	rs := Run(context.Background(), env, KVM, Firecracker, Kernel)
	err := Err(rs)
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	for _, w := range []string{"3 preflight checks failed", "kvm: /dev/kvm does not exist", "firecracker: firecracker binary", "kernel: kernel /nonexistent/vmlinux", "to go on without kvm, add it to ignore_preflight_errors"} {
		if !strings.Contains(msg, w) {
			t.Errorf("missing %q in %q", w, msg)
		}
	}
	if strings.Contains(msg, "without kvm and") || strings.Contains(msg, "without firecracker") {
		t.Errorf("suggests ignoring a missing binary: %q", msg)
	}
	if hint := IgnoreHint(rs); !strings.Contains(hint, "--ignore-preflight-errors kvm") || strings.Contains(hint, "firecracker") {
		t.Errorf("hint %q", hint)
	}
	// Only binaries missing: no ignore suggestion at all.
	rs = Run(context.Background(), env, Firecracker)
	if msg := Err(rs).Error(); !strings.HasPrefix(msg, "preflight check firecracker failed: ") || strings.Contains(msg, "ignore_preflight_errors") {
		t.Errorf("single failure: %q", msg)
	}
	if hint := IgnoreHint(rs); strings.Contains(hint, "ignore") {
		t.Errorf("hint suggests ignoring a missing binary: %q", hint)
	}
}

func TestNamesMatchConfig(t *testing.T) {
	if !slices.Equal(AllNames(), config.PreflightChecks) {
		t.Fatalf("AllNames %v != config.PreflightChecks %v", AllNames(), config.PreflightChecks)
	}
	env := Env{Config: config.Config{}, Paths: config.Paths{StateDir: t.TempDir()}, Probes: standIns()}
	for _, n := range AllNames() {
		if n == Sudo || n == Firecracker {
			continue // run a binary
		}
		if r := check(t, env, n); strings.HasPrefix(r.Detail, "unknown check") {
			t.Errorf("check %s has no implementation", n)
		}
	}
}

// TestDNSPortTaken: a port another process holds fails the check, whether
// or not a daemon runs; the daemon's own port passes.
func TestDNSPortTaken(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	addr := netip.MustParseAddrPort(pc.LocalAddr().String())
	env := Env{Config: config.Config{DNSListenAddr: addr}}

	r := check(t, env, DNSPort)
	if r.Status != Fail || !strings.Contains(r.Detail, addr.String()+" taken by another process") || !strings.Contains(r.Detail, "set dns_listen_addr") || !r.Ignorable {
		t.Fatalf("no daemon: %+v", r)
	}
	env.Daemon = &api.DaemonStatus{DNSProblem: DNSProblem(addr.String(), &net.OpError{Err: errors.New("x")})}
	r = check(t, env, DNSPort)
	if r.Status != Fail || !strings.Contains(r.Detail, "the running bangerd does not serve DNS") {
		t.Fatalf("daemon with problem: %+v", r)
	}
	env.Daemon = &api.DaemonStatus{DNSListen: []string{addr.String()}}
	if r = check(t, env, DNSPort); r.Status != Pass || !strings.Contains(r.Detail, "served by the running bangerd") {
		t.Fatalf("daemon serving: %+v", r)
	}
	env.Daemon = &api.DaemonStatus{}
	if r = check(t, env, DNSPort); r.Status != Fail || !strings.Contains(r.Detail, "taken by another process") {
		t.Fatalf("daemon not serving, port taken: %+v", r)
	}
}
