// Package preflight holds banger's host checks: `banger doctor` prints them
// all, and vm start/create run the ones they need and fail early with the
// same messages.
package preflight

import (
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/config"
	"banger/internal/hostops"
)

// Statuses.
const (
	Pass = "pass"
	Warn = "warn"
	Fail = "fail"
)

// Check names.
const (
	KVM           = "kvm"
	VhostVsock    = "vhost_vsock"
	Firecracker   = "firecracker"
	Kernel        = "kernel"
	Agent         = "agent"
	Sudo          = "sudo"
	DeviceMapper  = "device_mapper"
	Loop          = "loop"
	Tun           = "tun"
	NAT           = "nat"
	DNSPort       = "dns_port"
	StateDir      = "state_dir"
	ForwardPolicy = "forward_policy"
	Debootstrap   = "debootstrap"
)

// Result is one check's outcome.
type Result struct {
	Name    string `json:"name"`
	Status  string `json:"status"`
	Detail  string `json:"detail"`
	Fix     string `json:"fix,omitempty"`
	Ignored bool   `json:"ignored,omitempty"`
}

// Env is what the checks look at.
type Env struct {
	Config config.Config
	Paths  config.Paths
	// DaemonRunning means a bangerd answers, so its DNS port is expected to be taken.
	DaemonRunning bool
	// ForwardPolicy inspects foreign FORWARD chains (nil skips the check).
	ForwardPolicy func(bridge string) (ok bool, detail, fix string, err error)
	// Cache, when set, remembers checks that run a binary (firecracker
	// --version) for as long as that file is unchanged. The daemon keeps
	// one so a create does not spawn a process just to re-check.
	Cache *Cache
}

// Cache remembers results of checks keyed by the identity of the file they
// looked at (path, size, modification time).
type Cache struct {
	mu      sync.Mutex
	entries map[string]cacheEntry
}

type cacheEntry struct {
	size  int64
	mtime time.Time
	res   Result
}

// NewCache returns an empty cache.
func NewCache() *Cache { return &Cache{entries: map[string]cacheEntry{}} }

// cached returns the remembered result for path if the file is unchanged,
// else runs check and remembers a passing result.
func (c *Cache) cached(path string, check func() Result) Result {
	if c == nil {
		return check()
	}
	fi, err := os.Stat(path)
	if err != nil {
		return check()
	}
	c.mu.Lock()
	e, ok := c.entries[path]
	c.mu.Unlock()
	if ok && e.size == fi.Size() && e.mtime.Equal(fi.ModTime()) {
		return e.res
	}
	r := check()
	if r.Status == Pass {
		c.mu.Lock()
		c.entries[path] = cacheEntry{size: fi.Size(), mtime: fi.ModTime(), res: r}
		c.mu.Unlock()
	}
	return r
}

// AllNames lists every check in doctor's order.
func AllNames() []string {
	return []string{KVM, VhostVsock, Firecracker, Kernel, Agent, Sudo, DeviceMapper, Loop, Tun, NAT, ForwardPolicy, DNSPort, StateDir, Debootstrap}
}

// StartNames are the checks vm start and vm create run first.
func StartNames() []string {
	return []string{KVM, Firecracker, Kernel, Agent, Tun, StateDir}
}

// Run runs the named checks (all when names is empty), marking failures
// listed in ignore_preflight_errors as ignored warnings.
func Run(ctx context.Context, env Env, names ...string) []Result {
	if len(names) == 0 {
		names = AllNames()
	}
	var out []Result
	for _, n := range names {
		r := run(ctx, env, n)
		r.Name = n
		if r.Status == Fail && ignored(env.Config.IgnorePreflightErrors, n) {
			r.Status = Warn
			r.Ignored = true
			r.Detail += " (ignored by ignore_preflight_errors)"
		}
		out = append(out, r)
	}
	return out
}

func ignored(list []string, name string) bool {
	return slices.Contains(list, name) || slices.Contains(list, "all")
}

// FirstFailure returns an error for the first failed check, or nil.
func FirstFailure(rs []Result) error {
	for _, r := range rs {
		if r.Status == Fail {
			msg := fmt.Sprintf("preflight check %s failed: %s", r.Name, r.Detail)
			if r.Fix != "" {
				msg += "; " + r.Fix
			}
			return errors.New(msg)
		}
	}
	return nil
}

func run(ctx context.Context, env Env, name string) Result {
	c := env.Config
	switch name {
	case KVM:
		if _, err := os.Stat("/dev/kvm"); err != nil {
			return Result{Status: Fail, Detail: "/dev/kvm does not exist: this host has no KVM (nested virtualisation off, or not a Linux host with VT-x/AMD-V)",
				Fix: "enable virtualisation in the firmware or the hypervisor, load kvm_intel/kvm_amd, then re-run `banger doctor`"}
		}
		if err := unix.Access("/dev/kvm", unix.R_OK|unix.W_OK); err != nil {
			return Result{Status: Fail, Detail: "/dev/kvm is not read-write for this user",
				Fix: "add yourself to the kvm group (`sudo usermod -aG kvm $USER`, then log in again) or grant an ACL (`sudo setfacl -m u:$USER:rw /dev/kvm`)"}
		}
		return Result{Status: Pass, Detail: "/dev/kvm is read-write"}
	case VhostVsock:
		if _, err := os.Stat("/dev/vhost-vsock"); err != nil {
			return Result{Status: Warn, Detail: "/dev/vhost-vsock missing; not needed: Firecracker serves vsock in user space over unix sockets"}
		}
		return Result{Status: Pass, Detail: "/dev/vhost-vsock present"}
	case Firecracker:
		return env.Cache.cached(c.FirecrackerBin, func() Result { return checkFirecracker(ctx, c.FirecrackerBin) })
	case Kernel:
		if err := readable(c.KernelPath); err != nil {
			return Result{Status: Fail, Detail: fmt.Sprintf("kernel %s: %v", c.KernelPath, err), Fix: "install the runtime bundle with `banger runtime install`, or set kernel_path"}
		}
		return Result{Status: Pass, Detail: c.KernelPath}
	case Agent:
		return env.Cache.cached(c.VsockAgentPath, func() Result { return checkAgent(c.VsockAgentPath) })
	case Sudo:
		if os.Geteuid() == 0 {
			return Result{Status: Pass, Detail: "running as root: privileged operations run in-process"}
		}
		if _, err := hostops.Run(ctx, "sudo", "-n", "-l", c.HelperPath, "internal", "ensure-state-dirs"); err != nil {
			return Result{Status: Fail, Detail: fmt.Sprintf("`sudo -n %s internal ...` is not allowed: %s", c.HelperPath, oneLine(err.Error())),
				Fix: "run `sudo make install-helper` in the banger checkout (installs the helper and " + hostops.SudoersPath + ")"}
		}
		return Result{Status: Pass, Detail: "sudo -n may run " + c.HelperPath}
	case DeviceMapper:
		if _, err := os.Stat("/dev/mapper/control"); err != nil {
			return Result{Status: Warn, Detail: "no device-mapper (/dev/mapper/control missing): the copy storage driver is used (full copies instead of copy-on-write snapshots)",
				Fix: "load dm_mod and dm_snapshot (`sudo modprobe dm_snapshot`) for instant root disks"}
		}
		return Result{Status: Pass, Detail: "device-mapper available: dm storage driver usable"}
	case Loop:
		if _, err := os.Stat("/dev/loop-control"); err != nil {
			return Result{Status: Warn, Detail: "/dev/loop-control missing: the dm driver and /root repair need loop devices", Fix: "sudo modprobe loop"}
		}
		return Result{Status: Pass, Detail: "/dev/loop-control present"}
	case Tun:
		if _, err := os.Stat("/dev/net/tun"); err != nil {
			return Result{Status: Fail, Detail: "/dev/net/tun missing: taps cannot be created", Fix: "sudo modprobe tun"}
		}
		if err := unix.Access("/dev/net/tun", unix.R_OK|unix.W_OK); err != nil {
			return Result{Status: Fail, Detail: "/dev/net/tun is not read-write for this user: Firecracker opens its tap through it",
				Fix: "give it the usual mode (`sudo chmod 0666 /dev/net/tun`) or an ACL (`sudo setfacl -m u:$USER:rw /dev/net/tun`)"}
		}
		return Result{Status: Pass, Detail: "/dev/net/tun is read-write"}
	case NAT:
		if _, err := os.Stat("/proc/sys/net/ipv4/ip_forward"); err != nil {
			return Result{Status: Warn, Detail: "cannot read net.ipv4.ip_forward: NAT may not work"}
		}
		if _, err := os.Stat("/sys/module/nf_tables"); err != nil {
			return Result{Status: Warn, Detail: "nf_tables module not loaded yet (it loads on first use); VMs without NAT work regardless", Fix: "sudo modprobe nf_tables"}
		}
		return Result{Status: Pass, Detail: "nf_tables loaded"}
	case ForwardPolicy:
		if env.ForwardPolicy == nil {
			return Result{Status: Pass, Detail: "not checked"}
		}
		ok, detail, fix, err := env.ForwardPolicy(c.BridgeName)
		if err != nil {
			return Result{Status: Warn, Detail: "could not inspect the FORWARD chains: " + oneLine(err.Error())}
		}
		if !ok {
			return Result{Status: Warn, Detail: detail, Fix: fix}
		}
		return Result{Status: Pass, Detail: "no foreign FORWARD chain drops bridge traffic"}
	case DNSPort:
		return checkDNSPort(env)
	case Debootstrap:
		for _, dir := range []string{"/usr/sbin", "/usr/bin", "/sbin", "/bin"} {
			if _, err := os.Stat(filepath.Join(dir, "debootstrap")); err == nil {
				return Result{Status: Pass, Detail: "debootstrap available for `banger image build debian`"}
			}
		}
		return Result{Status: Warn, Detail: "debootstrap missing: `banger image build debian` needs it", Fix: "sudo apt-get install debootstrap"}
	case StateDir:
		return checkStateDir(env.Paths.StateDir)
	}
	return Result{Status: Fail, Detail: "unknown check " + name}
}

func readable(p string) error {
	if p == "" {
		return errors.New("not set")
	}
	f, err := os.Open(p)
	if err != nil {
		if os.IsNotExist(err) {
			return errors.New("does not exist")
		}
		return err
	}
	return f.Close()
}

func checkFirecracker(ctx context.Context, bin string) Result {
	fi, err := os.Stat(bin)
	if err != nil {
		return Result{Status: Fail, Detail: fmt.Sprintf("firecracker binary %s does not exist", bin), Fix: "install the runtime bundle with `banger runtime install`, or set firecracker_bin"}
	}
	if fi.Mode()&0o111 == 0 {
		return Result{Status: Fail, Detail: fmt.Sprintf("%s is not executable", bin), Fix: "chmod +x " + bin}
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := hostops.Run(ctx, bin, "--version")
	if err != nil {
		return Result{Status: Fail, Detail: fmt.Sprintf("%s --version failed: %s", bin, oneLine(err.Error()))}
	}
	return Result{Status: Pass, Detail: fmt.Sprintf("%s (%s)", bin, oneLine(string(out)))}
}

// checkAgent wants a static linux executable: no PT_INTERP program header.
func checkAgent(p string) Result {
	f, err := elf.Open(p)
	if err != nil {
		if os.IsNotExist(err) {
			return Result{Status: Fail, Detail: fmt.Sprintf("guest agent %s does not exist", p), Fix: "install the runtime bundle with `banger runtime install`, or set vsock_agent_path"}
		}
		return Result{Status: Fail, Detail: fmt.Sprintf("guest agent %s is not a linux executable: %v", p, err), Fix: "rebuild it with `make build` (CGO_ENABLED=0)"}
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return Result{Status: Fail, Detail: fmt.Sprintf("guest agent %s is dynamically linked; guests need a static binary", p), Fix: "rebuild it with `make build` (CGO_ENABLED=0)"}
		}
	}
	return Result{Status: Pass, Detail: p + " (static)"}
}

func checkDNSPort(env Env) Result {
	addr := env.Config.DNSListenAddr.String()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		if env.DaemonRunning {
			return Result{Status: Pass, Detail: addr + " served by the running bangerd"}
		}
		return Result{Status: Fail, Detail: fmt.Sprintf("DNS listen address %s is taken: %v", addr, oneLine(err.Error())), Fix: "set dns_listen_addr to a free port, or stop what holds it"}
	}
	pc.Close()
	return Result{Status: Pass, Detail: addr + " is free"}
}

// probePattern names the files checkStateDir writes to test the state dir.
const probePattern = ".doctor-*"

// CleanProbes removes the probe files a check killed before it could
// remove its own left in dir; it reports how many. bangerd runs it at
// start-up. A probe of a doctor running right now may go too: its check
// has already passed by then, and its own remove ignores the absence.
func CleanProbes(dir string) (int, error) {
	matches, err := filepath.Glob(filepath.Join(dir, probePattern))
	if err != nil {
		return 0, fmt.Errorf("listing probe files in %s: %w", dir, err)
	}
	n := 0
	var errs []error
	for _, m := range matches {
		fi, err := os.Lstat(m)
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		if err := os.Remove(m); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("removing probe file %s: %w", m, err))
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

func checkStateDir(dir string) Result {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Result{Status: Fail, Detail: fmt.Sprintf("cannot create state dir %s: %v", dir, err), Fix: "set BANGER_STATE_DIR to a writable directory"}
	}
	f, err := os.CreateTemp(dir, probePattern)
	if err != nil {
		return Result{Status: Fail, Detail: fmt.Sprintf("state dir %s is not writable: %v", dir, err), Fix: "fix its ownership: sudo chown -R $USER " + dir}
	}
	name := f.Name()
	f.Close()
	os.Remove(name)
	return Result{Status: Pass, Detail: filepath.Clean(dir) + " is writable"}
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}
