package config

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// setup writes content (unless nil) as the config file of a fresh temp
// state dir and returns its Paths.
func setup(t *testing.T, content *string) Paths {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "config.toml")
	if content != nil {
		if err := os.WriteFile(file, []byte(*content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	p, err := DefaultPaths(envMap(map[string]string{
		"HOME":             "/home/u",
		"BANGER_CONFIG":    file,
		"BANGER_STATE_DIR": filepath.Join(dir, "state"),
	}))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func ptr(s string) *string { return &s }

func noEnv(string) string { return "" }

func TestLoadMissingFileGivesDefaults(t *testing.T) {
	p := setup(t, nil)
	l, err := Load(p, noEnv)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if !reflect.DeepEqual(l.Config, Defaults(p)) {
		t.Errorf("Config = %+v, want Defaults", l.Config)
	}
	if l.Paths != p {
		t.Errorf("Paths = %+v, want %+v", l.Paths, p)
	}
	if len(l.Warnings) != 0 {
		t.Errorf("Warnings = %q, want none", l.Warnings)
	}
	for _, k := range KnownKeys() {
		if l.Sources[k] != SourceDefault {
			t.Errorf("Sources[%s] = %q, want default", k, l.Sources[k])
		}
	}
	if len(l.Sources) != len(KnownKeys()) {
		t.Errorf("Sources has %d keys, want %d", len(l.Sources), len(KnownKeys()))
	}
	if !strings.HasPrefix(l.Config.RuntimeDir, filepath.Dir(p.ConfigFile)) {
		t.Errorf("RuntimeDir %q is not under the test's state dir", l.Config.RuntimeDir)
	}
}

func TestLoadEmptyFile(t *testing.T) {
	p := setup(t, ptr("# nothing set\n\n"))
	l, err := Load(p, noEnv)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if !reflect.DeepEqual(l.Config, Defaults(p)) {
		t.Errorf("Config = %+v, want Defaults", l.Config)
	}
}

func TestLoadEveryKeyFromFile(t *testing.T) {
	content := `# every key
log_level = "debug"
runtime_dir = "/opt/rt"
firecracker_bin = "/usr/bin/firecracker"
kernel_path = "~/k/vmlinux"
initrd_path = "/boot/initrd"
vsock_agent_path = "/opt/agent"
ssh_key_path = "~/.ssh/id"
default_image_name = "void"
default_vcpu = 4
default_memory_mib = 2048
default_disk_size = "10G"
default_work_disk_size = 1073741824
bridge_name = "banger1"
bridge_ip = "10.9.0.254"
cidr = "10.9.0.0/16"
default_dns = "9.9.9.9"
dns_listen_addr = "[::1]:5353"
storage_driver = "copy"
stop_grace = "3s"
auto_stop_stale_after = "2h"
idle_action = "stop"
idle_after = "2h"
balloon = "off"
stats_poll_interval = "1s"
boot_deadline = "1m"
reconcile_interval = "45s"
tap_pool_size = 3
ignore_preflight_errors = ["kvm", "vhost_vsock"]
auto_forward = false
helper_path = "/usr/libexec/banger"
`
	p := setup(t, &content)
	l, err := Load(p, envMap(map[string]string{"HOME": "/home/u"}))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := Config{
		LogLevel:              "debug",
		RuntimeDir:            "/opt/rt",
		FirecrackerBin:        "/usr/bin/firecracker",
		KernelPath:            "/home/u/k/vmlinux",
		InitrdPath:            "/boot/initrd",
		VsockAgentPath:        "/opt/agent",
		SSHKeyPath:            "/home/u/.ssh/id",
		DefaultImageName:      "void",
		DefaultVCPU:           4,
		DefaultMemoryMiB:      2048,
		DefaultDiskSize:       10 << 30,
		DefaultWorkDiskSize:   1 << 30,
		BridgeName:            "banger1",
		BridgeIP:              netip.MustParseAddr("10.9.0.254"),
		CIDR:                  netip.MustParsePrefix("10.9.0.0/16"),
		DefaultDNS:            netip.MustParseAddr("9.9.9.9"),
		DNSListenAddr:         netip.MustParseAddrPort("[::1]:5353"),
		StorageDriver:         "copy",
		StopGrace:             3 * time.Second,
		AutoStopStaleAfter:    2 * time.Hour,
		IdleAction:            "stop",
		IdleAfter:             2 * time.Hour,
		Balloon:               "off",
		StatsPollInterval:     time.Second,
		BootDeadline:          time.Minute,
		ReconcileInterval:     45 * time.Second,
		TapPoolSize:           3,
		IgnorePreflightErrors: []string{"kvm", "vhost_vsock"},
		AutoForward:           false,
		HelperPath:            "/usr/libexec/banger",
	}
	if !reflect.DeepEqual(l.Config, want) {
		t.Errorf("Config =\n %+v\nwant\n %+v", l.Config, want)
	}
	for _, k := range KnownKeys() {
		if l.Sources[k] != SourceFile {
			t.Errorf("Sources[%s] = %q, want file", k, l.Sources[k])
		}
	}
	if len(l.Warnings) != 0 {
		t.Errorf("Warnings = %q", l.Warnings)
	}
}

func TestLoadDerivedDefaults(t *testing.T) {
	p := setup(t, ptr("runtime_dir = \"/opt/rt\"\nkernel_path = \"/k\"\ncidr = \"10.20.0.0/24\"\n"))
	l, err := Load(p, noEnv)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	c := l.Config
	if c.FirecrackerBin != "/opt/rt/firecracker" || c.VsockAgentPath != "/opt/rt/banger-agent" || c.SSHKeyPath != "/opt/rt/id_ed25519" {
		t.Errorf("bundle paths do not follow runtime_dir: %q %q %q", c.FirecrackerBin, c.VsockAgentPath, c.SSHKeyPath)
	}
	if c.KernelPath != "/k" {
		t.Errorf("KernelPath = %q, want the explicit /k", c.KernelPath)
	}
	if c.BridgeIP != netip.MustParseAddr("10.20.0.1") {
		t.Errorf("BridgeIP = %s, want the first host of cidr", c.BridgeIP)
	}
	if l.Sources["firecracker_bin"] != SourceDefault || l.Sources["bridge_ip"] != SourceDefault || l.Sources["runtime_dir"] != SourceFile {
		t.Errorf("Sources = %v", l.Sources)
	}
}

// TestLoadBadFile covers every bad-input case of the config file: each is
// one line naming the file, the line, the key and what to do.
func TestLoadBadFile(t *testing.T) {
	tests := []struct {
		name    string
		content string
		line    int
		key     string
		want    []string
	}{
		{"malformed toml", "log_level = \"info\"\n\ncidr = [\n", 3, "", []string{"malformed TOML"}},
		{"unterminated string", "log_level = \"info\n", 1, "", []string{"malformed TOML"}},
		{"unquoted word", "stop_grace = \"1s\"\nlog_level = debug\n", 2, "", []string{"malformed TOML", "need quotes"}},
		{"unquoted address", "bridge_ip = 172.16.0.1\n", 1, "", []string{"malformed TOML", "need quotes"}},
		{"duplicate key", "log_level = \"info\"\nlog_level = \"debug\"\n", 2, "", []string{"malformed TOML", "already been defined"}},
		{"unknown key", "# c\nlog_level = \"info\"\n\nlog_levl = \"debug\"\n", 4, "log_levl", []string{"unknown key", "did you mean log_level?"}},
		{"unknown key, case", "Default_VCPU = 2\n", 1, "Default_VCPU", []string{"did you mean default_vcpu?"}},
		{"unknown key, dashes", "stop-grace = \"1s\"\n", 1, "stop-grace", []string{"did you mean stop_grace?"}},
		{"unknown key near legacy", "vsock_ping_helpr_path = \"/a\"\n", 1, "vsock_ping_helpr_path", []string{"did you mean vsock_agent_path (formerly vsock_ping_helper_path)?"}},
		{"unknown key, nothing close", "frobnicate = 1\n", 1, "frobnicate", []string{"unknown key", "banger config show"}},
		{"unknown key after multi-line string", "log_level = \"info\"\nzzz = \"\"\"\na\nb\n\"\"\"\n", 2, "zzz", []string{"unknown key"}},
		{"unknown table", "log_level = \"info\"\n\n[network]\ncidr = \"10.0.0.0/24\"\n", 3, "network", []string{"unknown table", "top-level keys"}},
		{"dotted key", "\nbridge.name = \"banger1\"\n", 2, "bridge", []string{"unknown table"}},
		{"wrong type int", "default_vcpu = \"two\"\n", 1, "default_vcpu", []string{`expected an integer such as 2, got string "two"`}},
		{"wrong type float", "default_memory_mib = 1.5\n", 1, "default_memory_mib", []string{"expected an integer", "float 1.5"}},
		{"wrong type string", "log_level = 3\n", 1, "log_level", []string{"expected a string", "got integer 3"}},
		{"wrong type bool", "kernel_path = true\n", 1, "kernel_path", []string{"expected a path string", "boolean"}},
		{"wrong type bool key", "auto_forward = \"yes\"\n", 1, "auto_forward", []string{"expected true or false", `string "yes"`}},
		{"bool as integer", "auto_forward = 1\n", 1, "auto_forward", []string{"expected true or false", "integer 1"}},
		{"wrong type list", "ignore_preflight_errors = \"kvm\"\n", 1, "ignore_preflight_errors", []string{"expected an array of strings"}},
		{"wrong type list element", "ignore_preflight_errors = [\"kvm\", 2]\n", 1, "ignore_preflight_errors", []string{"element 2", "integer 2"}},
		{"wrong type table", "cidr = { a = 1 }\n", 1, "cidr", []string{"expected a CIDR string", "got table"}},
		{"int out of range", "default_vcpu = 99999999999\n", 1, "default_vcpu", []string{"out of range"}},
		{"duration as integer", "\nstop_grace = 10\n", 2, "stop_grace", []string{"durations are strings", `"10s"`}},
		{"duration garbage", "stop_grace = \"soon\"\n", 1, "stop_grace", []string{"not a duration"}},
		{"duration no unit", "boot_deadline = \"30\"\n", 1, "boot_deadline", []string{"not a duration", "with a unit"}},
		{"negative duration", "log_level = \"info\"\nstop_grace = \"-5s\"\n", 2, "stop_grace", []string{"negative duration -5s"}},
		{"negative stale duration", "auto_stop_stale_after = \"-1h\"\n", 1, "auto_stop_stale_after", []string{"negative duration"}},
		{"idle action", "idle_action = \"hibernate\"\n", 1, "idle_action", []string{"use suspend, stop or none"}},
		{"negative idle after", "idle_after = \"-1m\"\n", 1, "idle_after", []string{"negative duration"}},
		{"idle after disagrees with auto stop", "idle_after = \"10m\"\nauto_stop_stale_after = \"1h\"\n", 2, "auto_stop_stale_after", []string{"idle_after is 10m0s", "keep only idle_after"}},
		{"auto stop with idle action suspend", "idle_action = \"suspend\"\nauto_stop_stale_after = \"1h\"\n", 2, "auto_stop_stale_after", []string{`means idle_action = "stop"`, `idle_action is "suspend"`, "set idle_after instead"}},
		{"balloon", "balloon = \"yes\"\n", 1, "balloon", []string{"use auto, on or off"}},
		{"zero interval", "stats_poll_interval = \"0s\"\n", 1, "stats_poll_interval", []string{"greater than zero"}},
		{"invalid cidr", "cidr = \"10.0.0.0/33\"\n", 1, "cidr", []string{"not a CIDR"}},
		{"cidr garbage", "cidr = \"banger\"\n", 1, "cidr", []string{"not a CIDR", "172.16.0.0/24"}},
		{"cidr too small", "cidr = \"10.0.0.0/31\"\n", 1, "cidr", []string{"/30 or larger"}},
		{"cidr ipv6", "cidr = \"fd00::/64\"\n", 1, "cidr", []string{"not IPv4"}},
		{"bridge ip outside cidr", "cidr = \"10.0.0.0/24\"\n\nbridge_ip = \"172.16.0.1\"\n", 3, "bridge_ip", []string{"outside cidr 10.0.0.0/24", "10.0.0.1"}},
		{"bridge ip outside default cidr", "bridge_ip = \"10.0.0.1\"\n", 1, "bridge_ip", []string{"outside cidr 172.16.0.0/24"}},
		{"bridge ip garbage", "bridge_ip = \"gateway\"\n", 1, "bridge_ip", []string{"not an IP address"}},
		{"dns listen addr", "dns_listen_addr = \"localhost:53\"\n", 1, "dns_listen_addr", []string{"not an IP address and port", "127.0.0.1:42069"}},
		{"dns listen addr no port", "dns_listen_addr = \"127.0.0.1\"\n", 1, "dns_listen_addr", []string{"not an IP address and port"}},
		{"dns listen port out of range", "dns_listen_addr = \"127.0.0.1:70000\"\n", 1, "dns_listen_addr", []string{"not an IP address and port"}},
		{"default dns garbage", "default_dns = \"one.one\"\n", 1, "default_dns", []string{"not an IP address"}},
		{"bad size", "default_disk_size = \"8GB\"\n", 1, "default_disk_size", []string{"ambiguous"}},
		{"zero size", "default_work_disk_size = 0\n", 1, "default_work_disk_size", []string{"greater than zero"}},
		{"negative size", "default_disk_size = \"-8G\"\n", 1, "default_disk_size", []string{"negative"}},
		{"size as float", "default_disk_size = 8.0\n", 1, "default_disk_size", []string{"expected a size string"}},
		{"bridge name prefix", "bridge_name = \"br0\"\n", 1, "bridge_name", []string{`must start with "banger"`, "privileged helper"}},
		{"bridge name long", "bridge_name = \"banger-long-name\"\n", 1, "bridge_name", []string{"at most 15"}},
		{"log level", "log_level = \"loud\"\n", 1, "log_level", []string{"use debug, info, warn or error"}},
		{"storage driver", "storage_driver = \"lvm\"\n", 1, "storage_driver", []string{"use auto, dm or copy"}},
		{"vcpu range", "default_vcpu = 0\n", 1, "default_vcpu", []string{"use 1 to 32"}},
		{"relative path", "kernel_path = \"vmlinux\"\n", 1, "kernel_path", []string{"not an absolute path"}},
		{"tilde without HOME", "ssh_key_path = \"~/.ssh/id\"\n", 1, "ssh_key_path", []string{"HOME is not set", "write the path in full"}},
		{"legacy key bad type", "vsock_ping_helper_path = 5\n", 1, "vsock_ping_helper_path", []string{"expected a path string"}},
		{"legacy conflict", "vsock_agent_path = \"/a\"\n# old\nvsock_ping_helper_path = \"/b\"\n", 3, "vsock_ping_helper_path", []string{"old name of vsock_agent_path", "line 1", "keep only vsock_agent_path"}},
		{"legacy conflict, old first", "vsock_ping_helper_path = \"/b\"\nvsock_agent_path = \"/a\"\n", 1, "vsock_ping_helper_path", []string{"line 2", "different value"}},
		{"legacy relative path", "\nvsock_ping_helper_path = \"agent\"\n", 2, "vsock_agent_path", []string{"not an absolute path"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := setup(t, &tt.content)
			l, err := Load(p, noEnv)
			if err == nil {
				t.Fatalf("Load succeeded (%+v), want an error", l.Config)
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("Load error %v is %T, want *Error", err, err)
			}
			if ce.File != p.ConfigFile || ce.Line != tt.line || ce.Key != tt.key {
				t.Errorf("error at %s:%d key %q, want %s:%d key %q (%v)", ce.File, ce.Line, ce.Key, p.ConfigFile, tt.line, tt.key, err)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Errorf("error is not one line: %q", msg)
			}
			prefix := p.ConfigFile + ":" + strconv.Itoa(tt.line) + ": "
			if tt.key != "" {
				prefix += tt.key + ": "
			}
			if !strings.HasPrefix(msg, prefix) {
				t.Errorf("error %q does not start with %q", msg, prefix)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
		})
	}
}

func TestLoadUnreadableFile(t *testing.T) {
	p := setup(t, nil)
	if err := os.Mkdir(p.ConfigFile, 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := Load(p, noEnv)
	var ce *Error
	if !errors.As(err, &ce) || ce.File != p.ConfigFile || !strings.Contains(err.Error(), "reading config file") {
		t.Fatalf("Load = %v, want a read error naming %s", err, p.ConfigFile)
	}
	if strings.Count(err.Error(), p.ConfigFile) != 1 {
		t.Errorf("error names the file more than once: %q", err)
	}
}

func TestLoadLegacyKey(t *testing.T) {
	tests := []struct {
		name    string
		content string
		line    int
	}{
		{"old key alone", "log_level = \"info\"\nvsock_ping_helper_path = \"/opt/pingd\"\n", 2},
		{"old and new agree", "vsock_agent_path = \"/opt/pingd\"\nvsock_ping_helper_path = \"/opt/pingd\"\n", 2},
		{"old and new agree after ~ expansion", "vsock_agent_path = \"/home/u/pingd\"\n\nvsock_ping_helper_path = \"~/pingd\"\n", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := setup(t, &tt.content)
			l, err := Load(p, envMap(map[string]string{"HOME": "/home/u"}))
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if !strings.HasSuffix(l.Config.VsockAgentPath, "pingd") {
				t.Errorf("VsockAgentPath = %q", l.Config.VsockAgentPath)
			}
			if l.Sources["vsock_agent_path"] != SourceFile {
				t.Errorf("Sources[vsock_agent_path] = %q, want file", l.Sources["vsock_agent_path"])
			}
			if _, ok := l.Sources["vsock_ping_helper_path"]; ok {
				t.Errorf("Sources has the legacy key: %v", l.Sources)
			}
			want := p.ConfigFile + ":" + strconv.Itoa(tt.line) + ": vsock_ping_helper_path is deprecated; use vsock_agent_path"
			if !slices.Equal(l.Warnings, []string{want}) {
				t.Errorf("Warnings = %q, want exactly %q", l.Warnings, want)
			}
		})
	}
}

// TestLegacyFixture loads the fixture of a config written for an earlier
// banger (DESIGN.md §7).
func TestLegacyFixture(t *testing.T) {
	fixture, err := filepath.Abs(filepath.Join("testdata", "legacy.toml"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := DefaultPaths(envMap(map[string]string{"HOME": "/home/u", "BANGER_CONFIG": fixture, "BANGER_STATE_DIR": t.TempDir()}))
	if err != nil {
		t.Fatal(err)
	}
	l, err := Load(p, noEnv)
	if err != nil {
		t.Fatalf("Load(legacy fixture): %v", err)
	}
	if l.Config.VsockAgentPath != "/opt/banger/runtime/banger-vsock-pingd" {
		t.Errorf("VsockAgentPath = %q", l.Config.VsockAgentPath)
	}
	if l.Config.FirecrackerBin != "/opt/banger/runtime/firecracker" {
		t.Errorf("FirecrackerBin = %q, want it to follow runtime_dir", l.Config.FirecrackerBin)
	}
	if len(l.Warnings) != 1 || !strings.Contains(l.Warnings[0], fixture+":") ||
		!strings.HasSuffix(l.Warnings[0], "vsock_ping_helper_path is deprecated; use vsock_agent_path") {
		t.Errorf("Warnings = %q, want one line naming vsock_agent_path", l.Warnings)
	}
}

func TestLoadEnv(t *testing.T) {
	content := "log_level = \"warn\"\ndefault_vcpu = 4\nstop_grace = \"20s\"\n"
	p := setup(t, &content)
	env := map[string]string{
		"HOME":                           "/home/u",
		"BANGER_LOG_LEVEL":               "debug",
		"BANGER_FIRECRACKER_BIN":         "~/bin/fc",
		"BANGER_IGNORE_PREFLIGHT_ERRORS": " kvm, vhost_vsock ,,",
		"BANGER_DEFAULT_DISK_SIZE":       "4G",
		"BANGER_AUTO_STOP_STALE_AFTER":   "90m",
		"BANGER_CIDR":                    "10.1.0.0/24",
		"BANGER_DNS_LISTEN_ADDR":         "127.0.0.1:5300",
		"BANGER_TAP_POOL_SIZE":           "2",
		"BANGER_AUTO_FORWARD":            "false",
	}
	l, err := Load(p, envMap(env))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	c := l.Config
	if c.LogLevel != "debug" || c.FirecrackerBin != "/home/u/bin/fc" || c.DefaultDiskSize != 4<<30 ||
		c.AutoStopStaleAfter != 90*time.Minute || c.CIDR.String() != "10.1.0.0/24" || c.BridgeIP.String() != "10.1.0.1" ||
		c.DNSListenAddr.String() != "127.0.0.1:5300" || c.TapPoolSize != 2 || c.AutoForward || c.DefaultVCPU != 4 || c.StopGrace != 20*time.Second {
		t.Errorf("Config = %+v", c)
	}
	if !slices.Equal(c.IgnorePreflightErrors, []string{"kvm", "vhost_vsock"}) {
		t.Errorf("IgnorePreflightErrors = %q", c.IgnorePreflightErrors)
	}
	want := map[string]Source{
		"log_level": SourceEnv, "firecracker_bin": SourceEnv, "ignore_preflight_errors": SourceEnv,
		"default_disk_size": SourceEnv, "auto_stop_stale_after": SourceEnv, "cidr": SourceEnv,
		"dns_listen_addr": SourceEnv, "tap_pool_size": SourceEnv, "auto_forward": SourceEnv,
		"default_vcpu": SourceFile, "stop_grace": SourceFile,
		"bridge_ip": SourceDefault, "kernel_path": SourceDefault,
	}
	for k, src := range want {
		if l.Sources[k] != src {
			t.Errorf("Sources[%s] = %q, want %q", k, l.Sources[k], src)
		}
	}
}

func TestLoadEnvErrors(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		file string
		want string
	}{
		{"bad int", map[string]string{"BANGER_DEFAULT_VCPU": "two"}, "", `default_vcpu: from BANGER_DEFAULT_VCPU: "two" is not an integer`},
		{"bad duration", map[string]string{"BANGER_STOP_GRACE": "10"}, "", "stop_grace: from BANGER_STOP_GRACE: \"10\" is not a duration"},
		{"negative duration", map[string]string{"BANGER_STOP_GRACE": "-1s"}, "", "stop_grace: negative duration -1s; use a positive duration such as \"10s\" (set by BANGER_STOP_GRACE)"},
		{"bad cidr", map[string]string{"BANGER_CIDR": "10.0.0.0/40"}, "", "cidr: from BANGER_CIDR: \"10.0.0.0/40\" is not a CIDR"},
		{"bridge ip outside", map[string]string{"BANGER_BRIDGE_IP": "192.168.1.1"}, "", "bridge_ip: 192.168.1.1 is outside cidr 172.16.0.0/24; use an address inside it such as 172.16.0.1 (set by BANGER_BRIDGE_IP)"},
		{"bad dns listen", map[string]string{"BANGER_DNS_LISTEN_ADDR": "nope"}, "", "dns_listen_addr: from BANGER_DNS_LISTEN_ADDR"},
		{"bad size", map[string]string{"BANGER_DEFAULT_WORK_DISK_SIZE": "lots"}, "", "default_work_disk_size: from BANGER_DEFAULT_WORK_DISK_SIZE"},
		{"env fixes the file's conflict only if valid", map[string]string{"BANGER_LOG_LEVEL": "LOUD"}, "log_level = \"info\"\n", "log_level: \"LOUD\" is not a log level; use debug, info, warn or error (set by BANGER_LOG_LEVEL)"},
		{"legacy env conflict", map[string]string{"BANGER_VSOCK_AGENT_PATH": "/a", "BANGER_VSOCK_PING_HELPER_PATH": "/b"}, "", "vsock_ping_helper_path: BANGER_VSOCK_PING_HELPER_PATH and BANGER_VSOCK_AGENT_PATH are both set"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var content *string
			if tt.file != "" {
				content = &tt.file
			}
			p := setup(t, content)
			_, err := Load(p, envMap(tt.env))
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("Load = %v, want *Error", err)
			}
			if ce.File != "" || ce.Line != 0 {
				t.Errorf("env error carries a file location: %q", err)
			}
			if !strings.HasPrefix(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("Load error = %q, want one line starting %q", err, tt.want)
			}
		})
	}
}

func TestLoadLegacyEnv(t *testing.T) {
	p := setup(t, ptr("vsock_agent_path = \"/from/file\"\n"))
	env := map[string]string{"BANGER_VSOCK_PING_HELPER_PATH": "/from/env"}
	l, err := Load(p, envMap(env))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if l.Config.VsockAgentPath != "/from/env" || l.Sources["vsock_agent_path"] != SourceEnv {
		t.Errorf("VsockAgentPath = %q from %q, want /from/env from env", l.Config.VsockAgentPath, l.Sources["vsock_agent_path"])
	}
	if !slices.Equal(l.Warnings, []string{"BANGER_VSOCK_PING_HELPER_PATH is deprecated; use BANGER_VSOCK_AGENT_PATH"}) {
		t.Errorf("Warnings = %q", l.Warnings)
	}
	// Both set to the same value: fine, one warning.
	env["BANGER_VSOCK_AGENT_PATH"] = "/from/env"
	l, err = Load(p, envMap(env))
	if err != nil {
		t.Fatalf("Load with both: %v", err)
	}
	if l.Config.VsockAgentPath != "/from/env" || len(l.Warnings) != 1 {
		t.Errorf("VsockAgentPath = %q, Warnings = %q", l.Config.VsockAgentPath, l.Warnings)
	}
}

func TestLoadIdlePolicy(t *testing.T) {
	tests := []struct {
		name, content string
		action        string
		after         time.Duration
		showAction    string
		showAfter     string
	}{
		{"default is off", "", IdleNone, 0, "suspend", "0s"},
		{"idle_after alone suspends", "idle_after = \"30m\"\n", IdleSuspend, 30 * time.Minute, "suspend", "30m0s"},
		{"idle_action stop", "idle_action = \"stop\"\nidle_after = \"1h\"\n", IdleStop, time.Hour, "stop", "1h0m0s"},
		{"idle_action none turns it off", "idle_action = \"none\"\nidle_after = \"1h\"\n", IdleNone, 0, "none", "1h0m0s"},
		{"auto_stop_stale_after is stop", "auto_stop_stale_after = \"2h\"\n", IdleStop, 2 * time.Hour, "stop", "2h0m0s"},
		{"auto_stop_stale_after agreeing with both", "auto_stop_stale_after = \"2h\"\nidle_after = \"2h\"\nidle_action = \"stop\"\n", IdleStop, 2 * time.Hour, "stop", "2h0m0s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			content := tt.content
			p := setup(t, &content)
			l, err := Load(p, envMap(nil))
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			action, after := l.Config.Idle()
			if action != tt.action || after != tt.after {
				t.Errorf("Idle() = %s, %s; want %s, %s", action, after, tt.action, tt.after)
			}
			shown := map[string]string{}
			for _, e := range l.Entries() {
				shown[e.Key] = e.Value
			}
			if shown["idle_action"] != tt.showAction || shown["idle_after"] != tt.showAfter {
				t.Errorf("config show: idle_action = %q, idle_after = %q; want %q, %q", shown["idle_action"], shown["idle_after"], tt.showAction, tt.showAfter)
			}
		})
	}
}

func TestIdleOfHandBuiltConfig(t *testing.T) {
	// A Config built without Load (as daemon tests do) still maps
	// auto_stop_stale_after to stop.
	c := Defaults(Paths{})
	c.AutoStopStaleAfter = 3 * time.Second
	if a, d := c.Idle(); a != IdleStop || d != 3*time.Second {
		t.Errorf("Idle() = %s, %s", a, d)
	}
	c.IdleAfter = time.Minute
	if a, d := c.Idle(); a != IdleSuspend || d != time.Minute {
		t.Errorf("Idle() with idle_after = %s, %s", a, d)
	}
}
