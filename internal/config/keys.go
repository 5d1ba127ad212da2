package config

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// kind is how a key's value is written and checked.
type kind int

const (
	kindString   kind = iota // a TOML string
	kindPath                 // a TOML string naming a file; "~/" expands to HOME
	kindInt                  // a TOML integer
	kindSize                 // a size string ("8G") or an integer number of bytes
	kindDuration             // a duration string ("10s")
	kindAddr                 // an IP address string
	kindPrefix               // a CIDR string
	kindAddrPort             // an "ip:port" string
	kindList                 // an array of strings (comma-separated in the environment)
	kindBool                 // a TOML boolean (true/false, 1/0 in the environment)
)

func (k kind) String() string {
	switch k {
	case kindString:
		return "string"
	case kindPath:
		return "path"
	case kindInt:
		return "integer"
	case kindSize:
		return "size"
	case kindDuration:
		return "duration"
	case kindAddr:
		return "IP address"
	case kindPrefix:
		return "CIDR"
	case kindAddrPort:
		return "address:port"
	case kindList:
		return "list of strings"
	case kindBool:
		return "boolean"
	}
	return "unknown"
}

// keySpec describes one configuration key.
type keySpec struct {
	name    string
	kind    kind
	field   func(c *Config) any // pointer to the Config field
	example string              // a valid value, as written in TOML
	defDoc  string              // the default, as the key reference shows it
	doc     string              // what it means
}

// keySpecs is the key reference: every key in the order `config show` and
// the README list them.
func keySpecs() []keySpec {
	return []keySpec{
		{"log_level", kindString, func(c *Config) any { return &c.LogLevel }, `"debug"`, "`info`",
			"daemon log level: `debug`, `info`, `warn` or `error`"},
		{"runtime_dir", kindPath, func(c *Config) any { return &c.RuntimeDir }, `"/opt/banger/runtime"`, "`~/.local/share/banger/runtime`",
			"the runtime bundle's directory (Firecracker, kernel, agent, SSH key); not the socket directory"},
		{"firecracker_bin", kindPath, func(c *Config) any { return &c.FirecrackerBin }, `"/usr/local/bin/firecracker"`, "`<runtime_dir>/firecracker`",
			"the Firecracker binary the daemon starts"},
		{"kernel_path", kindPath, func(c *Config) any { return &c.KernelPath }, `"/srv/vmlinux"`, "`<runtime_dir>/vmlinux`",
			"guest kernel for images that bring none"},
		{"initrd_path", kindPath, func(c *Config) any { return &c.InitrdPath }, `"/srv/initrd.img"`, "empty (none)",
			"guest initrd for images that bring none"},
		{"vsock_agent_path", kindPath, func(c *Config) any { return &c.VsockAgentPath }, `"/srv/banger-agent"`, "`<runtime_dir>/banger-agent`",
			"the guest agent binary installed into images (legacy name: `vsock_ping_helper_path`)"},
		{"ssh_key_path", kindPath, func(c *Config) any { return &c.SSHKeyPath }, `"~/.ssh/id_ed25519"`, "`<runtime_dir>/id_ed25519`",
			"private key `banger vm ssh` logs in with; its `.pub` goes into images"},
		{"default_image_name", kindString, func(c *Config) any { return &c.DefaultImageName }, `"debian"`, "`debian`",
			"image `vm create` uses without `--image`"},
		{"default_vcpu", kindInt, func(c *Config) any { return &c.DefaultVCPU }, `2`, "`2`",
			"vCPUs of a new VM (1 to 32)"},
		{"default_memory_mib", kindInt, func(c *Config) any { return &c.DefaultMemoryMiB }, `1024`, "`1024`",
			"memory of a new VM in MiB (at least 128)"},
		{"default_disk_size", kindSize, func(c *Config) any { return &c.DefaultDiskSize }, `"8G"`, "`8G`",
			"root disk size of a new VM (K/M/G/T, 1024-based)"},
		{"default_work_disk_size", kindSize, func(c *Config) any { return &c.DefaultWorkDiskSize }, `"16G"`, "`16G`",
			"size of a new VM's `/root` work disk"},
		{"bridge_name", kindString, func(c *Config) any { return &c.BridgeName }, `"banger0"`, "`banger0`",
			"host bridge for the VMs; at most 15 characters, must start with `banger`"},
		{"bridge_ip", kindAddr, func(c *Config) any { return &c.BridgeIP }, `"172.16.0.1"`, "first host address of `cidr` (`172.16.0.1`)",
			"the bridge's address: the guests' gateway, and a DNS listener"},
		{"cidr", kindPrefix, func(c *Config) any { return &c.CIDR }, `"172.16.0.0/24"`, "`172.16.0.0/24`",
			"IPv4 subnet guest addresses come from (`/30` or larger); the default holds 253 VMs and `vm create` warns when few are left: widen it (`172.16.0.0/22` holds 1021) and restart the daemon"},
		{"default_dns", kindAddr, func(c *Config) any { return &c.DefaultDNS }, `"1.1.1.1"`, "`1.1.1.1`",
			"the resolver guests use (IPv4)"},
		{"dns_listen_addr", kindAddrPort, func(c *Config) any { return &c.DNSListenAddr }, `"127.0.0.1:42069"`, "`127.0.0.1:42069`",
			"where the daemon answers `NAME.vm` queries (also on `bridge_ip` with the same port)"},
		{"storage_driver", kindString, func(c *Config) any { return &c.StorageDriver }, `"copy"`, "`auto`",
			"root disk driver: `auto` (dm when available, else copy), `dm` or `copy`"},
		{"stop_grace", kindDuration, func(c *Config) any { return &c.StopGrace }, `"10s"`, "`10s`",
			"how long `vm stop` waits for the guest to shut down before killing it"},
		{"auto_stop_stale_after", kindDuration, func(c *Config) any { return &c.AutoStopStaleAfter }, `"2h"`, "`0s` (off)",
			"stop VMs idle (no SSH logins, no traffic) this long; the older form of `idle_action = \"stop\"` with `idle_after`"},
		{"idle_action", kindString, func(c *Config) any { return &c.IdleAction }, `"stop"`, "`suspend`",
			"what happens to a VM idle for `idle_after`: `suspend` (snapshot to disk, woken by `vm ssh`, `vm exec`, `vm cp` or a DNS query for its name), `stop` or `none`"},
		{"idle_after", kindDuration, func(c *Config) any { return &c.IdleAfter }, `"30m"`, "`0s` (off)",
			"how long a VM must be idle (no SSH logins, no traffic, no use through banger) before `idle_action`; `0s` turns it off"},
		{"balloon", kindString, func(c *Config) any { return &c.Balloon }, `"on"`, "`auto`",
			"the memory balloon with free page reporting, so idle guests give freed memory back: `auto` (on when Firecracker is 1.14 or newer), `on` (balloon and statistics always, page reporting when supported) or `off`"},
		{"stats_poll_interval", kindDuration, func(c *Config) any { return &c.StatsPollInterval }, `"5s"`, "`5s`",
			"how often VM CPU and memory use is sampled"},
		{"boot_deadline", kindDuration, func(c *Config) any { return &c.BootDeadline }, `"30s"`, "`30s`",
			"how long a start waits for the guest agent to answer"},
		{"reconcile_interval", kindDuration, func(c *Config) any { return &c.ReconcileInterval }, `"30s"`, "`30s`",
			"how often the daemon reconciles its store with the host"},
		{"tap_pool_size", kindInt, func(c *Config) any { return &c.TapPoolSize }, `4`, "`0`",
			"taps created ahead of time to speed up starts (0 = none)"},
		{"ignore_preflight_errors", kindList, func(c *Config) any { return &c.IgnorePreflightErrors }, `["kvm", "vhost_vsock"]`, "`[]`",
			"preflight checks whose failure only warns (e.g. `kvm`, `vhost_vsock`, or `all`)"},
		{"auto_forward", kindBool, func(c *Config) any { return &c.AutoForward }, `false`, "`true`",
			"forward each TCP port a guest listens on to `127.0.0.1` on the host (another port when taken or below 1024)"},
		{"helper_path", kindPath, func(c *Config) any { return &c.HelperPath }, `"/usr/local/libexec/banger/banger"`, "`/usr/local/libexec/banger/banger`",
			"root-owned banger binary that `sudo -n` runs for privileged operations"},
	}
}

func specFor(key string) (keySpec, bool) {
	for _, s := range keySpecs() {
		if s.name == key {
			return s, true
		}
	}
	return keySpec{}, false
}

// tomlType names the TOML type of a decoded value for error messages.
func tomlType(v any) string {
	switch x := v.(type) {
	case string:
		return fmt.Sprintf("string %q", x)
	case int64:
		return fmt.Sprintf("integer %d", x)
	case float64:
		return fmt.Sprintf("float %v", x)
	case bool:
		return fmt.Sprintf("boolean %v", x)
	case []any, []map[string]any:
		return "array"
	case map[string]any:
		return "table"
	case time.Time:
		return "datetime"
	}
	return fmt.Sprintf("%T", v)
}

// fromTOML sets the key's field from a decoded TOML value.
func (s keySpec) fromTOML(c *Config, v any, home string) error {
	switch s.kind {
	case kindInt:
		n, ok := v.(int64)
		if !ok {
			return fmt.Errorf("expected an integer such as %s, got %s", s.example, tomlType(v))
		}
		if n < -1<<31 || n > 1<<31-1 {
			return fmt.Errorf("%d is out of range", n)
		}
		*s.field(c).(*int) = int(n)
		return nil
	case kindSize:
		switch x := v.(type) {
		case int64:
			if x <= 0 {
				return fmt.Errorf("size %d bytes must be greater than zero; use a size such as %s", x, s.example)
			}
			*s.field(c).(*int64) = x
			return nil
		case string:
			return s.fromString(c, x, home)
		}
		return fmt.Errorf("expected a size string such as %s, got %s", s.example, tomlType(v))
	case kindDuration:
		str, ok := v.(string)
		if !ok {
			return fmt.Errorf("expected a duration string with a unit such as %s, got %s (durations are strings, not numbers)", s.example, tomlType(v))
		}
		return s.fromString(c, str, home)
	case kindBool:
		b, ok := v.(bool)
		if !ok {
			return fmt.Errorf("expected true or false, got %s", tomlType(v))
		}
		*s.field(c).(*bool) = b
		return nil
	case kindList:
		arr, ok := v.([]any)
		if !ok {
			return fmt.Errorf("expected an array of strings such as %s, got %s", s.example, tomlType(v))
		}
		list := make([]string, 0, len(arr))
		for i, e := range arr {
			str, ok := e.(string)
			if !ok {
				return fmt.Errorf("element %d: expected a string, got %s; use an array of strings such as %s", i+1, tomlType(e), s.example)
			}
			list = append(list, str)
		}
		*s.field(c).(*[]string) = list
		return nil
	}
	str, ok := v.(string)
	if !ok {
		what := "a string"
		if s.kind != kindString {
			what = "a " + s.kind.String() + " string"
		}
		return fmt.Errorf("expected %s such as %s, got %s", what, s.example, tomlType(v))
	}
	return s.fromString(c, str, home)
}

// fromString sets the key's field from its string form (a TOML string or an
// environment variable).
func (s keySpec) fromString(c *Config, v, home string) error {
	switch s.kind {
	case kindString:
		*s.field(c).(*string) = v
	case kindPath:
		*s.field(c).(*string) = expandHome(v, home)
	case kindInt:
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("%q is not an integer; use a value such as %s", v, s.example)
		}
		*s.field(c).(*int) = n
	case kindSize:
		n, err := ParseSize(v)
		if err != nil {
			return err
		}
		*s.field(c).(*int64) = n
	case kindDuration:
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("%q is not a duration; write a number with a unit such as %s (ns, us, ms, s, m, h)", v, s.example)
		}
		*s.field(c).(*time.Duration) = d
	case kindAddr:
		a, err := netip.ParseAddr(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("%q is not an IP address; use one such as %s", v, s.example)
		}
		*s.field(c).(*netip.Addr) = a
	case kindPrefix:
		p, err := netip.ParsePrefix(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("%q is not a CIDR; use a subnet such as %s", v, s.example)
		}
		*s.field(c).(*netip.Prefix) = p
	case kindAddrPort:
		ap, err := netip.ParseAddrPort(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("%q is not an IP address and port; use one such as %s (IPv6 as [::1]:42069)", v, s.example)
		}
		*s.field(c).(*netip.AddrPort) = ap
	case kindList:
		var list []string
		for _, e := range strings.Split(v, ",") {
			if e = strings.TrimSpace(e); e != "" {
				list = append(list, e)
			}
		}
		*s.field(c).(*[]string) = list
	case kindBool:
		b, err := strconv.ParseBool(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("%q is not a boolean; use true or false", v)
		}
		*s.field(c).(*bool) = b
	}
	return nil
}

// render is the key's value as `config show` prints it.
func (s keySpec) render(c *Config) string {
	switch f := s.field(c).(type) {
	case *string:
		return *f
	case *int:
		return strconv.Itoa(*f)
	case *int64:
		return FormatSize(*f)
	case *time.Duration:
		return f.String()
	case *netip.Addr:
		if !f.IsValid() {
			return ""
		}
		return f.String()
	case *netip.Prefix:
		if !f.IsValid() {
			return ""
		}
		return f.String()
	case *netip.AddrPort:
		if !f.IsValid() {
			return ""
		}
		return f.String()
	case *[]string:
		return strings.Join(*f, ",")
	case *bool:
		return strconv.FormatBool(*f)
	}
	return ""
}

// expandHome turns a leading "~/" (or a lone "~") into HOME.
func expandHome(p, home string) string {
	if home == "" {
		return p
	}
	if p == "~" {
		return home
	}
	if strings.HasPrefix(p, "~/") {
		return filepath.Join(home, p[2:])
	}
	return p
}
