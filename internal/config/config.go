package config

import (
	"net/netip"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Config is banger's effective configuration.
type Config struct {
	LogLevel              string         // log_level: debug|info|warn|error
	RuntimeDir            string         // runtime_dir: the runtime bundle's directory
	FirecrackerBin        string         // firecracker_bin
	KernelPath            string         // kernel_path
	InitrdPath            string         // initrd_path: "" means none
	VsockAgentPath        string         // vsock_agent_path (legacy: vsock_ping_helper_path)
	SSHKeyPath            string         // ssh_key_path
	DefaultImageName      string         // default_image_name
	DefaultVCPU           int            // default_vcpu: 1..32
	DefaultMemoryMiB      int            // default_memory_mib: >= 128
	DefaultDiskSize       int64          // default_disk_size, bytes
	DefaultWorkDiskSize   int64          // default_work_disk_size, bytes
	BridgeName            string         // bridge_name: banger-prefixed, <= 15 chars
	BridgeIP              netip.Addr     // bridge_ip: inside CIDR
	CIDR                  netip.Prefix   // cidr: IPv4, /30 or larger
	DefaultDNS            netip.Addr     // default_dns: the guests' resolver
	DNSListenAddr         netip.AddrPort // dns_listen_addr
	StorageDriver         string         // storage_driver: auto|dm|copy
	StopGrace             time.Duration  // stop_grace: > 0
	AutoStopStaleAfter    time.Duration  // auto_stop_stale_after: 0 = off; the older form of idle_action = "stop"
	IdleAction            string         // idle_action: suspend|stop|none
	IdleAfter             time.Duration  // idle_after: 0 = off
	Balloon               string         // balloon: auto|on|off
	StatsPollInterval     time.Duration  // stats_poll_interval: > 0
	BootDeadline          time.Duration  // boot_deadline: > 0
	ReconcileInterval     time.Duration  // reconcile_interval: > 0
	TapPoolSize           int            // tap_pool_size: >= 0
	IgnorePreflightErrors []string       // ignore_preflight_errors: check names or "all"
	AutoForward           bool           // auto_forward: forward guest listeners to 127.0.0.1
	HelperPath            string         // helper_path: the sudo target
}

// Default values that do not depend on Paths.
const (
	DefaultLogLevel          = "info"
	DefaultImageName         = "debian"
	DefaultVCPU              = 2
	DefaultMemoryMiB         = 1024
	DefaultDiskSize          = 8 * GiB
	DefaultWorkDiskSize      = 16 * GiB
	DefaultBridgeName        = "banger0"
	DefaultCIDR              = "172.16.0.0/24"
	DefaultDNS               = "1.1.1.1"
	DefaultDNSListenAddr     = "127.0.0.1:42069"
	DefaultStorageDriver     = "auto"
	DefaultStopGrace         = 10 * time.Second
	DefaultStatsPollInterval = 5 * time.Second
	DefaultBootDeadline      = 30 * time.Second
	DefaultReconcileInterval = 30 * time.Second
	DefaultHelperPath        = "/usr/local/libexec/banger/banger"
	DefaultIdleAction        = IdleSuspend
	DefaultBalloon           = BalloonAuto
)

// Values of idle_action.
const (
	IdleSuspend = "suspend"
	IdleStop    = "stop"
	IdleNone    = "none"
)

// Values of balloon.
const (
	BalloonAuto = "auto"
	BalloonOn   = "on"
	BalloonOff  = "off"
)

// Names of the files in a runtime bundle that path keys default to.
const (
	BundleFirecracker = "firecracker"
	BundleKernel      = "vmlinux"
	BundleAgent       = "banger-agent"
	BundleSSHKey      = "id_ed25519"
)

// Source says where a value came from.
type Source string

// Sources of a value.
const (
	SourceDefault Source = "default"
	SourceFile    Source = "file"
	SourceEnv     Source = "env"
)

// Loaded is the effective config with the origin of every key.
type Loaded struct {
	Config   Config
	Paths    Paths
	Sources  map[string]Source // key name (new name) -> source
	Warnings []string          // one line each, e.g. a legacy key that was used
}

// Entry is one key of the effective config, for `banger config show`.
type Entry struct {
	Key    string `json:"key"`
	Value  string `json:"value"`
	Source Source `json:"source"`
	Env    string `json:"env"` // the environment variable that overrides it
}

// Defaults is the configuration banger uses when neither the file nor the
// environment says otherwise.
func Defaults(p Paths) Config {
	runtime := filepath.Join(p.DataDir, "runtime")
	cidr := netip.MustParsePrefix(DefaultCIDR)
	c := Config{
		LogLevel:            DefaultLogLevel,
		RuntimeDir:          runtime,
		InitrdPath:          "",
		DefaultImageName:    DefaultImageName,
		DefaultVCPU:         DefaultVCPU,
		DefaultMemoryMiB:    DefaultMemoryMiB,
		DefaultDiskSize:     DefaultDiskSize,
		DefaultWorkDiskSize: DefaultWorkDiskSize,
		BridgeName:          DefaultBridgeName,
		BridgeIP:            cidr.Addr().Next(),
		CIDR:                cidr,
		DefaultDNS:          netip.MustParseAddr(DefaultDNS),
		DNSListenAddr:       netip.MustParseAddrPort(DefaultDNSListenAddr),
		StorageDriver:       DefaultStorageDriver,
		StopGrace:           DefaultStopGrace,
		AutoStopStaleAfter:  0,
		IdleAction:          DefaultIdleAction,
		IdleAfter:           0,
		Balloon:             DefaultBalloon,
		StatsPollInterval:   DefaultStatsPollInterval,
		BootDeadline:        DefaultBootDeadline,
		ReconcileInterval:   DefaultReconcileInterval,
		TapPoolSize:         0,
		AutoForward:         true,
		HelperPath:          DefaultHelperPath,
	}
	c.setRuntimeDefaults(map[string]bool{})
	return c
}

// setRuntimeDefaults points the bundle file keys that were not given
// explicitly at the files of RuntimeDir.
func (c *Config) setRuntimeDefaults(explicit map[string]bool) {
	set := func(key string, dst *string, file string) {
		if !explicit[key] {
			*dst = filepath.Join(c.RuntimeDir, file)
		}
	}
	set("firecracker_bin", &c.FirecrackerBin, BundleFirecracker)
	set("kernel_path", &c.KernelPath, BundleKernel)
	set("vsock_agent_path", &c.VsockAgentPath, BundleAgent)
	set("ssh_key_path", &c.SSHKeyPath, BundleSSHKey)
}

// Idle is what happens to idle VMs: the action and after how long (0 and
// IdleNone when nothing happens). idle_after with idle_action wins;
// without idle_after, auto_stop_stale_after means "stop after it" (Load
// refuses the two when they disagree).
func (c Config) Idle() (action string, after time.Duration) {
	switch {
	case c.IdleAfter > 0 && c.IdleAction != IdleNone:
		return c.IdleAction, c.IdleAfter
	case c.IdleAfter == 0 && c.AutoStopStaleAfter > 0:
		return IdleStop, c.AutoStopStaleAfter
	}
	return IdleNone, 0
}

// KnownKeys returns every valid key name (new names only), sorted.
func KnownKeys() []string {
	specs := keySpecs()
	keys := make([]string, 0, len(specs))
	for _, s := range specs {
		keys = append(keys, s.name)
	}
	sort.Strings(keys)
	return keys
}

// LegacyKeys maps each legacy key name to the key that replaced it.
func LegacyKeys() map[string]string {
	return map[string]string{"vsock_ping_helper_path": "vsock_agent_path"}
}

// EnvName is the environment variable that overrides key:
// BANGER_ followed by the key in upper case.
func EnvName(key string) string {
	return "BANGER_" + strings.ToUpper(key)
}

// Entries lists every key with its rendered value and source, in a stable
// order (the order of the key reference), for `banger config show`.
func (l *Loaded) Entries() []Entry {
	specs := keySpecs()
	out := make([]Entry, 0, len(specs))
	for _, s := range specs {
		src := l.Sources[s.name]
		if src == "" {
			src = SourceDefault
		}
		out = append(out, Entry{Key: s.name, Value: s.render(&l.Config), Source: src, Env: EnvName(s.name)})
	}
	return out
}
