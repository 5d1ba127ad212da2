// Package preflight holds banger's host checks: `banger doctor` prints them
// all, and vm start/create run the ones they need and fail early with the
// same messages. Capabilities are found by trying them (internal/capability),
// the same probes the daemon's own choices use, so doctor and the daemon
// agree.
package preflight

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"banger/internal/api"
	"banger/internal/capability"
	"banger/internal/config"
)

// Statuses.
const (
	Pass = "pass"
	Warn = "warn"
	Fail = "fail"
)

// Check names (config.PreflightChecks lists them all, in doctor's order).
const (
	KVM           = "kvm"
	PVM           = "pvm"
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

// ignorable are the checks whose failure leaves VMs usable, so suggesting
// ignore_preflight_errors makes sense: without KVM a fake Firecracker (CI)
// still runs, and without the DNS port only NAME.vm resolution is lost. A
// missing binary, kernel or helper is never worth ignoring: the start would
// fail a moment later.
var ignorable = []string{KVM, DNSPort}

// Ignorable reports whether a failure of the named check is worth ignoring.
func Ignorable(name string) bool { return slices.Contains(ignorable, name) }

// Result is one check's outcome.
type Result struct {
	Name      string `json:"name"`
	Status    string `json:"status"`
	Detail    string `json:"detail"`
	Fix       string `json:"fix,omitempty"`
	Ignored   bool   `json:"ignored,omitempty"`
	Ignorable bool   `json:"ignorable,omitempty"`
}

// Env is what the checks look at.
type Env struct {
	Config config.Config
	Paths  config.Paths
	// Daemon is the running bangerd's status, nil when none answers; the
	// DNS check asks it which addresses it serves.
	Daemon *api.DaemonStatus
	// ForwardPolicy inspects foreign FORWARD chains (nil skips the check).
	ForwardPolicy func(bridge string) (ok bool, detail, fix string, err error)
	// Cache, when set, remembers checks that run a binary (firecracker
	// --version) for as long as that file is unchanged. The daemon keeps
	// one so a create does not spawn a process just to re-check.
	Cache *Cache
	// Probes ask the kernel; zero fields use internal/capability.
	Probes Probes
}

// Probes are the capability probes the checks use. Tests put stand-ins in.
type Probes struct {
	KVM          func() error
	Tun          func() error
	Loop         func() (string, error)
	DeviceMapper func() (string, error) // device-mapper with the snapshot target
	NFTables     func() (string, error)
	PVM          func() capability.PVM
	KernelConfig func(kernel string) (string, error)
}

func (p Probes) withDefaults() Probes {
	if p.KVM == nil {
		p.KVM = capability.KVM
	}
	if p.Tun == nil {
		p.Tun = capability.Tun
	}
	if p.Loop == nil {
		p.Loop = capability.Loop
	}
	if p.DeviceMapper == nil {
		p.DeviceMapper = capability.DMSnapshots
	}
	if p.NFTables == nil {
		p.NFTables = capability.NFTables
	}
	if p.PVM == nil {
		p.PVM = capability.DetectPVM
	}
	if p.KernelConfig == nil {
		p.KernelConfig = capability.KernelConfig
	}
	return p
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
func AllNames() []string { return slices.Clone(config.PreflightChecks) }

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
	env.Probes = env.Probes.withDefaults()
	var out []Result
	for _, n := range names {
		r := run(ctx, env, n)
		r.Name = n
		if r.Status == Fail {
			r.Ignorable = Ignorable(n)
			if ignored(env.Config.IgnorePreflightErrors, n) {
				r.Status = Warn
				r.Ignored = true
				r.Detail += " (ignored by ignore_preflight_errors)"
			}
		}
		out = append(out, r)
	}
	return out
}

func ignored(list []string, name string) bool {
	return slices.Contains(list, name) || slices.Contains(list, config.IgnoreAllPreflight)
}

// Failed returns the failed checks.
func Failed(rs []Result) []Result {
	var out []Result
	for _, r := range rs {
		if r.Status == Fail {
			out = append(out, r)
		}
	}
	return out
}

// Err returns one error naming every failed check with its fix, or nil. It
// suggests ignore_preflight_errors only for checks worth ignoring.
func Err(rs []Result) error {
	failed := Failed(rs)
	if len(failed) == 0 {
		return nil
	}
	var parts, ign []string
	for _, r := range failed {
		p := r.Detail
		if r.Fix != "" {
			p += " (fix: " + r.Fix + ")"
		}
		parts = append(parts, r.Name+": "+p)
		if r.Ignorable {
			ign = append(ign, r.Name)
		}
	}
	msg := "preflight check " + strings.Replace(parts[0], ": ", " failed: ", 1)
	if len(failed) > 1 {
		msg = fmt.Sprintf("%d preflight checks failed: %s", len(failed), strings.Join(parts, "; "))
	}
	if len(ign) > 0 {
		msg += fmt.Sprintf("; to go on without %s, add it to ignore_preflight_errors", strings.Join(ign, " and "))
	}
	return errors.New(msg)
}

// IgnoreHint is doctor's closing line for failed checks: what to do, and
// which of them (if any) may be ignored.
func IgnoreHint(rs []Result) string {
	var ign []string
	for _, r := range Failed(rs) {
		if r.Ignorable {
			ign = append(ign, r.Name)
		}
	}
	if len(ign) == 0 {
		return "some checks failed; fix them (each has a fix line above)"
	}
	return fmt.Sprintf("some checks failed; fix them, or, to go on without %s, pass --ignore-preflight-errors %s or add it to ignore_preflight_errors",
		strings.Join(ign, " and "), strings.Join(ign, ","))
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
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
