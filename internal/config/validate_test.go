package config

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

func testPaths(t *testing.T) Paths {
	t.Helper()
	p, err := DefaultPaths(envMap(map[string]string{"HOME": "/home/u"}))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaults(t *testing.T) {
	c := Defaults(testPaths(t))
	rt := "/home/u/.local/share/banger/runtime"
	want := Config{
		LogLevel:            "info",
		RuntimeDir:          rt,
		FirecrackerBin:      rt + "/firecracker",
		KernelPath:          rt + "/vmlinux",
		InitrdPath:          "",
		VsockAgentPath:      rt + "/banger-agent",
		SSHKeyPath:          rt + "/id_ed25519",
		DefaultImageName:    "debian",
		DefaultVCPU:         2,
		DefaultMemoryMiB:    1024,
		DefaultDiskSize:     8 << 30,
		DefaultWorkDiskSize: 16 << 30,
		BridgeName:          "banger0",
		BridgeIP:            netip.MustParseAddr("172.16.0.1"),
		CIDR:                netip.MustParsePrefix("172.16.0.0/24"),
		DefaultDNS:          netip.MustParseAddr("1.1.1.1"),
		DNSListenAddr:       netip.MustParseAddrPort("127.0.0.1:42069"),
		StorageDriver:       "auto",
		StopGrace:           10 * time.Second,
		AutoStopStaleAfter:  0,
		IdleAction:          "suspend",
		Balloon:             "auto",
		StatsPollInterval:   5 * time.Second,
		BootDeadline:        30 * time.Second,
		ReconcileInterval:   30 * time.Second,
		TapPoolSize:         0,
		AutoForward:         true,
		HelperPath:          "/usr/local/libexec/banger/banger",
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Defaults =\n %+v\nwant\n %+v", c, want)
	}
	if err := Validate(c); err != nil {
		t.Errorf("Validate(Defaults) = %v", err)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(c *Config)
		key    string // "" means valid
		want   string
	}{
		{"defaults", func(c *Config) {}, "", ""},
		{"debug level", func(c *Config) { c.LogLevel = "debug" }, "", ""},
		{"bad level", func(c *Config) { c.LogLevel = "verbose" }, "log_level", "use debug, info, warn or error"},
		{"relative kernel", func(c *Config) { c.KernelPath = "vmlinux" }, "kernel_path", "not an absolute path"},
		{"empty firecracker", func(c *Config) { c.FirecrackerBin = "" }, "firecracker_bin", "is empty"},
		{"empty initrd is none", func(c *Config) { c.InitrdPath = "" }, "", ""},
		{"relative initrd", func(c *Config) { c.InitrdPath = "initrd" }, "initrd_path", "not an absolute path"},
		{"relative helper", func(c *Config) { c.HelperPath = "banger" }, "helper_path", "not an absolute path"},
		{"relative runtime dir", func(c *Config) { c.RuntimeDir = "rt" }, "runtime_dir", "not an absolute path"},
		{"empty image", func(c *Config) { c.DefaultImageName = "" }, "default_image_name", "not an image name"},
		{"image with slash", func(c *Config) { c.DefaultImageName = "a/b" }, "default_image_name", "not an image name"},
		{"image with dots", func(c *Config) { c.DefaultImageName = "debian-12.5_x" }, "", ""},
		{"zero vcpu", func(c *Config) { c.DefaultVCPU = 0 }, "default_vcpu", "use 1 to 32"},
		{"33 vcpu", func(c *Config) { c.DefaultVCPU = 33 }, "default_vcpu", "use 1 to 32"},
		{"32 vcpu", func(c *Config) { c.DefaultVCPU = 32 }, "", ""},
		{"127 MiB", func(c *Config) { c.DefaultMemoryMiB = 127 }, "default_memory_mib", "at least 128"},
		{"128 MiB", func(c *Config) { c.DefaultMemoryMiB = 128 }, "", ""},
		{"zero disk", func(c *Config) { c.DefaultDiskSize = 0 }, "default_disk_size", "greater than zero"},
		{"negative work disk", func(c *Config) { c.DefaultWorkDiskSize = -1 }, "default_work_disk_size", "greater than zero"},
		{"bridge without prefix", func(c *Config) { c.BridgeName = "br0" }, "bridge_name", `must start with "banger"`},
		{"bridge too long", func(c *Config) { c.BridgeName = "banger-bridge-01" }, "bridge_name", "at most 15"},
		{"bridge 15 chars", func(c *Config) { c.BridgeName = "banger-bridge-1" }, "", ""},
		{"bridge bad char", func(c *Config) { c.BridgeName = "banger/0" }, "bridge_name", "use only letters"},
		{"bridge empty", func(c *Config) { c.BridgeName = "" }, "bridge_name", "is empty"},
		{"ipv6 cidr", func(c *Config) { c.CIDR = netip.MustParsePrefix("fd00::/64") }, "cidr", "not IPv4"},
		{"cidr /31", func(c *Config) { c.CIDR = netip.MustParsePrefix("10.0.0.0/31") }, "cidr", "use /30 or larger"},
		{"cidr /32", func(c *Config) { c.CIDR = netip.MustParsePrefix("10.0.0.0/32") }, "cidr", "use /30 or larger"},
		{"cidr /30", func(c *Config) {
			c.CIDR = netip.MustParsePrefix("10.0.0.0/30")
			c.BridgeIP = netip.MustParseAddr("10.0.0.1")
		}, "", ""},
		{"cidr host bits", func(c *Config) { c.CIDR = netip.MustParsePrefix("172.16.0.5/24") }, "cidr", "write the subnet as 172.16.0.0/24"},
		{"cidr unset", func(c *Config) { c.CIDR = netip.Prefix{} }, "cidr", "not set"},
		{"bridge ip outside", func(c *Config) { c.BridgeIP = netip.MustParseAddr("10.0.0.1") }, "bridge_ip", "outside cidr 172.16.0.0/24"},
		{"bridge ip network", func(c *Config) { c.BridgeIP = netip.MustParseAddr("172.16.0.0") }, "bridge_ip", "network address"},
		{"bridge ip broadcast", func(c *Config) { c.BridgeIP = netip.MustParseAddr("172.16.0.255") }, "bridge_ip", "broadcast address"},
		{"bridge ip last host", func(c *Config) { c.BridgeIP = netip.MustParseAddr("172.16.0.254") }, "", ""},
		{"bridge ip v6", func(c *Config) { c.BridgeIP = netip.MustParseAddr("::1") }, "bridge_ip", "not IPv4"},
		{"bridge ip unset", func(c *Config) { c.BridgeIP = netip.Addr{} }, "bridge_ip", "not set"},
		{"dns v6", func(c *Config) { c.DefaultDNS = netip.MustParseAddr("2606:4700::1111") }, "default_dns", "not IPv4"},
		{"dns unspecified", func(c *Config) { c.DefaultDNS = netip.MustParseAddr("0.0.0.0") }, "default_dns", "not a resolver"},
		{"dns unset", func(c *Config) { c.DefaultDNS = netip.Addr{} }, "default_dns", "not set"},
		{"dns listen port 0", func(c *Config) { c.DNSListenAddr = netip.MustParseAddrPort("127.0.0.1:0") }, "dns_listen_addr", "port 0"},
		{"dns listen v6", func(c *Config) { c.DNSListenAddr = netip.MustParseAddrPort("[::1]:53") }, "", ""},
		{"dns listen unset", func(c *Config) { c.DNSListenAddr = netip.AddrPort{} }, "dns_listen_addr", "not set"},
		{"storage driver", func(c *Config) { c.StorageDriver = "zfs" }, "storage_driver", "use auto, dm or copy"},
		{"storage copy", func(c *Config) { c.StorageDriver = "copy" }, "", ""},
		{"negative stop grace", func(c *Config) { c.StopGrace = -time.Second }, "stop_grace", "negative duration -1s"},
		{"zero stop grace", func(c *Config) { c.StopGrace = 0 }, "stop_grace", "greater than zero"},
		{"negative stale", func(c *Config) { c.AutoStopStaleAfter = -time.Minute }, "auto_stop_stale_after", "negative duration"},
		{"zero stale is off", func(c *Config) { c.AutoStopStaleAfter = 0 }, "", ""},
		{"zero stats poll", func(c *Config) { c.StatsPollInterval = 0 }, "stats_poll_interval", "greater than zero"},
		{"negative boot deadline", func(c *Config) { c.BootDeadline = -1 }, "boot_deadline", "negative duration"},
		{"zero reconcile", func(c *Config) { c.ReconcileInterval = 0 }, "reconcile_interval", "greater than zero"},
		{"negative tap pool", func(c *Config) { c.TapPoolSize = -1 }, "tap_pool_size", "negative"},
		{"tap pool", func(c *Config) { c.TapPoolSize = 8 }, "", ""},
		{"ignore checks", func(c *Config) { c.IgnorePreflightErrors = []string{"kvm", "vhost_vsock", "all"} }, "", ""},
		{"ignore bad name", func(c *Config) { c.IgnorePreflightErrors = []string{"KVM check"} }, "ignore_preflight_errors", "not a preflight check; use kvm, pvm, vhost_vsock"},
		{"ignore unknown name", func(c *Config) { c.IgnorePreflightErrors = []string{"kvm", "kvmm"} }, "ignore_preflight_errors", `"kvmm" is not a preflight check; use kvm,`},
		{"ignore empty name", func(c *Config) { c.IgnorePreflightErrors = []string{""} }, "ignore_preflight_errors", "not a preflight check"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Defaults(testPaths(t))
			tt.mutate(&c)
			err := Validate(c)
			if tt.key == "" {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("Validate = %v (%T), want *Error for %s", err, err, tt.key)
			}
			if ce.Key != tt.key || ce.File != "" || ce.Line != 0 {
				t.Errorf("error key/file/line = %q/%q/%d, want %q and no location", ce.Key, ce.File, ce.Line, tt.key)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, tt.key+": ") || !strings.Contains(msg, tt.want) || strings.Contains(msg, "\n") {
				t.Errorf("Validate = %q, want one line starting %q containing %q", msg, tt.key+": ", tt.want)
			}
		})
	}
}

func TestErrorString(t *testing.T) {
	tests := []struct {
		err  Error
		want string
	}{
		{Error{File: "/c.toml", Line: 3, Key: "cidr", Msg: "bad"}, "/c.toml:3: cidr: bad"},
		{Error{File: "/c.toml", Key: "cidr", Msg: "bad"}, "/c.toml: cidr: bad"},
		{Error{File: "/c.toml", Line: 2, Msg: "malformed TOML: x"}, "/c.toml:2: malformed TOML: x"},
		{Error{Key: "cidr", Msg: "bad"}, "cidr: bad"},
		{Error{Key: "k", Msg: "a\nb\r\nc"}, "k: a b c"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}

func TestValidateIdleAndBalloon(t *testing.T) {
	base := Defaults(Paths{DataDir: "/d", ConfigFile: "/c/config.toml"})
	for _, tt := range []struct {
		name    string
		mod     func(*Config)
		wantKey string
	}{
		{"every idle action", func(c *Config) { c.IdleAction = IdleNone; c.IdleAfter = time.Minute }, ""},
		{"bad idle action", func(c *Config) { c.IdleAction = "sleep" }, "idle_action"},
		{"negative idle after", func(c *Config) { c.IdleAfter = -time.Second }, "idle_after"},
		{"auto stop equal to idle after", func(c *Config) { c.AutoStopStaleAfter = time.Hour; c.IdleAfter = time.Hour }, ""},
		{"auto stop unequal to idle after", func(c *Config) { c.AutoStopStaleAfter = time.Hour; c.IdleAfter = time.Minute }, "auto_stop_stale_after"},
		{"balloon on", func(c *Config) { c.Balloon = BalloonOn }, ""},
		{"balloon bad", func(c *Config) { c.Balloon = "true" }, "balloon"},
	} {
		c := base
		tt.mod(&c)
		err := Validate(c)
		var e *Error
		switch {
		case tt.wantKey == "" && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.wantKey != "" && (!errors.As(err, &e) || e.Key != tt.wantKey):
			t.Errorf("%s: err = %v, want one naming %s", tt.name, err, tt.wantKey)
		}
	}
}
