//go:build system

// Package test holds whole-system tests: the real banger and bangerd
// binaries driven end to end against the fake Firecracker, inside a
// throwaway network namespace. Run with `go test -tags system ./test/`.
package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"banger/internal/api"
)

// binaries are built once per test process.
type binaries struct {
	dir                               string
	banger, bangerd, fcfake, agentBin string
}

var (
	buildOnce sync.Once
	built     binaries
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", err
	}
	return filepath.Dir(strings.TrimSpace(string(out))), nil
}

func buildBinaries(t testing.TB) binaries {
	t.Helper()
	buildOnce.Do(func() {
		root, err := moduleRoot()
		if err != nil {
			buildErr = err
			return
		}
		dir, err := os.MkdirTemp("/tmp", "banger-sysbin-")
		if err != nil {
			buildErr = err
			return
		}
		os.Chmod(dir, 0o755)
		built = binaries{dir: dir,
			banger: filepath.Join(dir, "banger"), bangerd: filepath.Join(dir, "bangerd"),
			fcfake: filepath.Join(dir, "fcfake"), agentBin: filepath.Join(dir, "banger-agent")}
		// banger is the front (-tags banger_front), which execs
		// banger-full next to it for the commands it does not have, as
		// `make build` lays them out.
		for _, b := range []struct{ out, pkg, tags string }{
			{built.banger, "./cmd/banger", "banger_front"}, {filepath.Join(dir, "banger-full"), "./cmd/banger", ""},
			{built.bangerd, "./cmd/bangerd", ""}, {built.fcfake, "./test/fcfake", ""}, {built.agentBin, "./cmd/banger-agent", ""},
		} {
			cmd := exec.Command("go", "build", "-tags="+b.tags, "-o", b.out, b.pkg)
			cmd.Dir = root
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("building %s (tags %q): %v: %s", b.pkg, b.tags, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return built
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace, bridge and taps")
	}
	for _, tool := range []string{"ip", "mkfs.ext4", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (CI installs it)", tool)
		}
	}
}

// env is one isolated banger installation running in its own netns.
type env struct {
	t      testing.TB
	bins   binaries
	ns     string
	dir    string
	state  string
	extra  []string // extra environment for commands (FCFAKE_*)
	record string
}

func newEnv(t testing.TB, cfgExtra string) *env {
	t.Helper()
	requireRoot(t)
	bins := buildBinaries(t)
	dir, err := os.MkdirTemp("/tmp", "bsys-")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, bins: bins, dir: dir, state: filepath.Join(dir, "s"), ns: fmt.Sprintf("bgsys%d", time.Now().UnixNano()%100000000)}
	e.record = filepath.Join(dir, "fcfake.jsonl")
	run(t, "ip", "netns", "add", e.ns)
	run(t, "ip", "-n", e.ns, "link", "set", "lo", "up")
	t.Cleanup(e.cleanup)
	kernel := filepath.Join(dir, "vmlinux")
	if err := os.WriteFile(kernel, []byte("not a real kernel: fcfake only opens it"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`firecracker_bin = %q
kernel_path = %q
vsock_agent_path = %q
ignore_preflight_errors = ["kvm"]
storage_driver = "copy"
stop_grace = "3s"
boot_deadline = "8s"
dns_listen_addr = "127.0.0.1:42069"
default_disk_size = "256M"
default_work_disk_size = "64M"
default_memory_mib = 256
default_vcpu = 1
%s`, bins.fcfake, kernel, bins.agentBin, cfgExtra)
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) environ() []string {
	base := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + e.dir,
		"BANGER_STATE_DIR=" + e.state,
		"BANGER_CONFIG=" + filepath.Join(e.dir, "config.toml"),
		"XDG_RUNTIME_DIR=" + filepath.Join(e.dir, "r"),
		"FCFAKE_RECORD=" + e.record,
	}
	return append(base, e.extra...)
}

// banger runs the CLI inside the namespace and returns stdout, stderr and
// the exit code.
func (e *env) banger(args ...string) (string, string, int) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", e.ns, e.bins.banger}, args...)...)
	cmd.Env = e.environ()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else {
			e.t.Fatalf("running banger %v: %v", args, err)
		}
	}
	return out.String(), errb.String(), code
}

// ok runs the CLI and fails the test on a non-zero exit.
func (e *env) ok(args ...string) string {
	e.t.Helper()
	out, errOut, code := e.banger(args...)
	if code != 0 {
		e.t.Fatalf("banger %s: exit %d\nstdout: %s\nstderr: %s\ndaemon log:\n%s", strings.Join(args, " "), code, out, errOut, e.daemonLogTail())
	}
	return out
}

func (e *env) daemonLogTail() string {
	b, _ := os.ReadFile(filepath.Join(e.state, "bangerd.log"))
	lines := strings.Split(string(b), "\n")
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	return strings.Join(lines, "\n")
}

func (e *env) vms() []api.VM {
	e.t.Helper()
	var l api.VMList
	if err := json.Unmarshal([]byte(e.ok("vm", "list", "--json")), &l); err != nil {
		e.t.Fatalf("vm list --json: %v", err)
	}
	return l.VMs
}

func (e *env) vm(name string) api.VM {
	e.t.Helper()
	var v api.VM
	if err := json.Unmarshal([]byte(e.ok("vm", "show", name, "--json")), &v); err != nil {
		e.t.Fatalf("vm show --json: %v", err)
	}
	return v
}

// registerImage builds a small ext4 image with a root home and registers it
// as the default image.
func (e *env) registerImage() {
	e.t.Helper()
	tree := filepath.Join(e.dir, "tree")
	for _, d := range []string{"root/.ssh", "etc", "usr/local/bin", "sbin"} {
		os.MkdirAll(filepath.Join(tree, d), 0o755)
	}
	os.WriteFile(filepath.Join(tree, "sbin/init"), []byte("#!/bin/sh\n"), 0o755) // register wants an init
	os.Chmod(filepath.Join(tree, "root"), 0o700)
	os.WriteFile(filepath.Join(tree, "root/.bashrc"), []byte("# bashrc\n"), 0o644)
	os.WriteFile(filepath.Join(tree, "root/.ssh/authorized_keys"), []byte("ssh-ed25519 AAAA test\n"), 0o600)
	os.WriteFile(filepath.Join(tree, "etc/hostname"), []byte("guest\n"), 0o644)
	img := filepath.Join(e.dir, "img.ext4")
	run(e.t, "mkfs.ext4", "-q", "-F", "-d", tree, img, "32M")
	e.ok("image", "register", "debian", "--rootfs", img)
}

func (e *env) daemonPID() int {
	var st api.DaemonStatus
	out := e.ok("daemon", "status", "--json")
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		e.t.Fatalf("daemon status --json: %v: %s", err, out)
	}
	return st.PID
}

func (e *env) cleanup() {
	// Stop the daemon, kill anything of ours that is left (a daemon's
	// command line does not name the dir, its environment does), remove
	// the netns.
	e.banger("daemon", "stop")
	for _, pid := range processesUnder(e.dir) {
		syscall_kill(pid)
	}
	for _, pid := range processesWithEnv(e.dir) {
		syscall_kill(pid)
	}
	exec.Command("ip", "netns", "del", e.ns).Run()
	os.RemoveAll(e.dir)
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// processesUnder lists live processes whose command line mentions dir.
func processesUnder(dir string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, ent := range ents {
		var pid int
		if _, err := fmt.Sscanf(ent.Name(), "%d", &pid); err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(b), dir) {
			continue
		}
		st, _ := os.ReadFile(filepath.Join("/proc", ent.Name(), "stat"))
		if i := strings.LastIndexByte(string(st), ')'); i > 0 && len(st) > i+2 && st[i+2] == 'Z' {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}

// processesWithEnv lists live processes whose environment mentions dir
// (bangerd started on demand by a test's CLI).
func processesWithEnv(dir string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, ent := range ents {
		var pid int
		if _, err := fmt.Sscanf(ent.Name(), "%d", &pid); err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "environ"))
		if err == nil && strings.Contains(string(b), dir) && alive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// fcProcesses lists live fcfake processes of this env.
func (e *env) fcProcesses() []int {
	var out []int
	for _, pid := range processesUnder(e.state) {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if strings.Contains(string(b), "--api-sock") {
			out = append(out, pid)
		}
	}
	return out
}

// taps lists the bgt- interfaces in the namespace.
func (e *env) taps() []string {
	out := run(e.t, "ip", "-n", e.ns, "-j", "link", "show")
	var links []struct {
		Name string `json:"ifname"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil {
		e.t.Fatalf("ip -j link: %v", err)
	}
	var taps []string
	for _, l := range links {
		if strings.HasPrefix(l.Name, "bgt-") {
			taps = append(taps, l.Name)
		}
	}
	return taps
}

// natTable is banger's NAT table of the default bridge banger0
// (network.NATTableName).
const natTable = "banger-banger0"

// natMembers lists the addresses in banger's NAT set in the namespace.
func (e *env) natMembers() string {
	out, err := exec.Command("ip", "netns", "exec", e.ns, "nft", "list", "set", "ip", natTable, "nat_guests").CombinedOutput()
	if err != nil {
		return ""
	}
	s := string(out)
	if i := strings.Index(s, "elements = {"); i >= 0 {
		s = s[i+len("elements = {"):]
		if j := strings.Index(s, "}"); j >= 0 {
			return strings.TrimSpace(s[:j])
		}
	}
	return ""
}

// recordEvent is one line of fcfake's FCFAKE_RECORD file.
type recordEvent struct {
	T      time.Time `json:"t"`
	PID    int       `json:"pid"`
	ID     string    `json:"id"`
	Event  string    `json:"event"`
	Method string    `json:"method"`
	Path   string    `json:"path"`
	Body   json.RawMessage
}

func (e *env) records() []recordEvent {
	e.t.Helper()
	b, err := os.ReadFile(e.record)
	if err != nil {
		e.t.Fatalf("reading fcfake record: %v", err)
	}
	var evs []recordEvent
	for _, line := range strings.Split(string(b), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var ev recordEvent
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			e.t.Fatalf("record line %q: %v", line, err)
		}
		evs = append(evs, ev)
	}
	return evs
}
