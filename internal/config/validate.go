package config

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Limits the validation enforces.
const (
	MaxVCPU          = 32
	MinMemoryMiB     = 128
	MaxBridgeNameLen = 15 // IFNAMSIZ - 1
	BridgePrefix     = "banger"
	// IgnoreAllPreflight in ignore_preflight_errors ignores every check.
	IgnoreAllPreflight = "all"
)

// Validate checks a configuration and returns the first problem as an
// *Error naming the key and what to do, or nil.
func Validate(c Config) error {
	if err := validate(&c); err != nil {
		return err
	}
	return nil
}

func validate(c *Config) *Error {
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return keyError("log_level", "%q is not a log level; use debug, info, warn or error", c.LogLevel)
	}
	for _, p := range []struct {
		key, val string
		optional bool
	}{
		{"runtime_dir", c.RuntimeDir, false},
		{"firecracker_bin", c.FirecrackerBin, false},
		{"kernel_path", c.KernelPath, false},
		{"initrd_path", c.InitrdPath, true},
		{"vsock_agent_path", c.VsockAgentPath, false},
		{"ssh_key_path", c.SSHKeyPath, false},
		{"helper_path", c.HelperPath, false},
	} {
		if p.val == "" && p.optional {
			continue
		}
		if p.val == "" {
			return keyError(p.key, "is empty; set it to an absolute path or remove it to use the default")
		}
		if p.val == "~" || strings.HasPrefix(p.val, "~/") {
			return keyError(p.key, "%q starts with ~ but HOME is not set; write the path in full", p.val)
		}
		if !filepath.IsAbs(p.val) {
			return keyError(p.key, "%q is not an absolute path; write it in full (\"~/\" is expanded)", p.val)
		}
	}
	if !validImageName(c.DefaultImageName) {
		return keyError("default_image_name", "%q is not an image name; use letters, digits, '.', '_' and '-', starting with a letter or digit (e.g. debian)", c.DefaultImageName)
	}
	if c.DefaultVCPU < 1 || c.DefaultVCPU > MaxVCPU {
		return keyError("default_vcpu", "%d is out of range; use 1 to %d", c.DefaultVCPU, MaxVCPU)
	}
	if c.DefaultMemoryMiB < MinMemoryMiB {
		return keyError("default_memory_mib", "%d MiB is too little; use at least %d", c.DefaultMemoryMiB, MinMemoryMiB)
	}
	if c.DefaultDiskSize <= 0 {
		return keyError("default_disk_size", "must be greater than zero; use a size such as 8G")
	}
	if c.DefaultWorkDiskSize <= 0 {
		return keyError("default_work_disk_size", "must be greater than zero; use a size such as 16G")
	}
	if err := validateBridgeName(c.BridgeName); err != nil {
		return err
	}
	if err := validateNetwork(c); err != nil {
		return err
	}
	switch c.StorageDriver {
	case "auto", "dm", "copy":
	default:
		return keyError("storage_driver", "%q is not a storage driver; use auto, dm or copy", c.StorageDriver)
	}
	for _, d := range []struct {
		key      string
		val      time.Duration
		zeroIsOK bool
	}{
		{"stop_grace", c.StopGrace, false},
		{"auto_stop_stale_after", c.AutoStopStaleAfter, true},
		{"idle_after", c.IdleAfter, true},
		{"stats_poll_interval", c.StatsPollInterval, false},
		{"boot_deadline", c.BootDeadline, false},
		{"reconcile_interval", c.ReconcileInterval, false},
	} {
		switch {
		case d.val < 0:
			return keyError(d.key, "negative duration %s; use a positive duration such as \"10s\"", d.val)
		case d.val == 0 && !d.zeroIsOK:
			return keyError(d.key, "must be greater than zero; use a duration such as \"10s\"")
		}
	}
	switch c.IdleAction {
	case IdleSuspend, IdleStop, IdleNone:
	default:
		return keyError("idle_action", "%q is not an idle action; use suspend, stop or none", c.IdleAction)
	}
	if c.AutoStopStaleAfter > 0 && c.IdleAfter > 0 && c.IdleAfter != c.AutoStopStaleAfter {
		return keyError("auto_stop_stale_after", "is %s but idle_after is %s; auto_stop_stale_after is the older form of idle_action = \"stop\" with idle_after, keep only idle_after", c.AutoStopStaleAfter, c.IdleAfter)
	}
	switch c.Balloon {
	case BalloonAuto, BalloonOn, BalloonOff:
	default:
		return keyError("balloon", "%q is not a balloon setting; use auto, on or off", c.Balloon)
	}
	if c.TapPoolSize < 0 {
		return keyError("tap_pool_size", "%d is negative; use 0 (no pool) or more", c.TapPoolSize)
	}
	if err := CheckPreflightNames(c.IgnorePreflightErrors); err != nil {
		return keyError("ignore_preflight_errors", "%v", err)
	}
	return nil
}

// PreflightChecks names every preflight check, in doctor's order. The
// checks live in internal/preflight (which imports this package); its tests
// keep the two in step.
var PreflightChecks = []string{
	"kvm", "pvm", "vhost_vsock", "firecracker", "kernel", "agent", "sudo", "device_mapper", "loop", "tun",
	"nat", "forward_policy", "dns_port", "state_dir", "debootstrap",
}

// CheckPreflightNames refuses a name in an ignore list that is not a
// preflight check (or "all"), listing the names.
func CheckPreflightNames(names []string) error {
	for _, name := range names {
		if name == IgnoreAllPreflight || slices.Contains(PreflightChecks, name) {
			continue
		}
		return fmt.Errorf("%q is not a preflight check; use %s, or %s", name, strings.Join(PreflightChecks, ", "), IgnoreAllPreflight)
	}
	return nil
}

func validateBridgeName(name string) *Error {
	const key = "bridge_name"
	switch {
	case name == "":
		return keyError(key, "is empty; use a name such as banger0")
	case len(name) > MaxBridgeNameLen:
		return keyError(key, "%q is %d characters; interface names have at most %d", name, len(name), MaxBridgeNameLen)
	case !strings.HasPrefix(name, BridgePrefix):
		return keyError(key, "%q must start with %q, because the privileged helper only touches banger-owned interfaces; use a name such as banger0", name, BridgePrefix)
	}
	for _, r := range name {
		if !isAlnum(r) && r != '_' && r != '.' && r != '-' {
			return keyError(key, "%q has %q; use only letters, digits, '_', '.' and '-'", name, r)
		}
	}
	return nil
}

func validateNetwork(c *Config) *Error {
	p := c.CIDR
	switch {
	case !p.IsValid():
		return keyError("cidr", "is not set; use an IPv4 subnet such as %s", DefaultCIDR)
	case !p.Addr().Is4():
		return keyError("cidr", "%s is not IPv4; guests get IPv4 addresses, use a subnet such as %s", p, DefaultCIDR)
	case p.Bits() > 30:
		return keyError("cidr", "%s is too small: it needs room for the gateway and at least one guest; use /30 or larger, such as %s", p, DefaultCIDR)
	case p.Masked() != p:
		return keyError("cidr", "%s has host bits set; write the subnet as %s", p, p.Masked())
	}
	ip := c.BridgeIP
	switch {
	case !ip.IsValid():
		return keyError("bridge_ip", "is not set; use an address inside cidr %s such as %s", p, p.Addr().Next())
	case !ip.Is4():
		return keyError("bridge_ip", "%s is not IPv4; use an address inside cidr %s such as %s", ip, p, p.Addr().Next())
	case !p.Contains(ip):
		return keyError("bridge_ip", "%s is outside cidr %s; use an address inside it such as %s", ip, p, p.Addr().Next())
	case ip == p.Addr():
		return keyError("bridge_ip", "%s is the network address of cidr %s; use a host address such as %s", ip, p, p.Addr().Next())
	case ip == broadcast(p):
		return keyError("bridge_ip", "%s is the broadcast address of cidr %s; use a host address such as %s", ip, p, p.Addr().Next())
	}
	dns := c.DefaultDNS
	switch {
	case !dns.IsValid():
		return keyError("default_dns", "is not set; use the IPv4 address of a resolver guests can reach, such as %s", DefaultDNS)
	case !dns.Is4():
		return keyError("default_dns", "%s is not IPv4; the guest kernel's ip= setting takes an IPv4 resolver, such as %s", dns, DefaultDNS)
	case dns.IsUnspecified():
		return keyError("default_dns", "%s is not a resolver address; use one such as %s", dns, DefaultDNS)
	}
	ap := c.DNSListenAddr
	switch {
	case !ap.IsValid():
		return keyError("dns_listen_addr", "is not set; use an address and port such as %s", DefaultDNSListenAddr)
	case ap.Port() == 0:
		return keyError("dns_listen_addr", "%s has port 0; use a fixed port such as %s", ap, DefaultDNSListenAddr)
	}
	return nil
}

// broadcast is the last address of an IPv4 prefix.
func broadcast(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v |= host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func isAlnum(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
}

func validImageName(name string) bool {
	if name == "" || !isAlnum(rune(name[0])) {
		return false
	}
	for _, r := range name {
		if !isAlnum(r) && r != '_' && r != '.' && r != '-' {
			return false
		}
	}
	return true
}
