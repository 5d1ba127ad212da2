//go:build system

package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/api"
)

// sudoEnv runs banger as an unprivileged user whose daemon reaches root only
// through `sudo -n <helper> internal <op>` and the drop-in that
// `make install-helper` writes.
type sudoEnv struct {
	*env
	user string
	uid  int
	home string
}

func newSudoEnv(t *testing.T) *sudoEnv {
	t.Helper()
	requireRoot(t)
	for _, tool := range []string{"sudo", "useradd", "userdel", "runuser", "visudo", "make", "setfacl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (CI installs it)", tool)
		}
	}
	e := newEnv(t, "")
	os.Chmod(e.dir, 0o755)
	suffix := fmt.Sprintf("%d", time.Now().UnixNano()%1000000)
	s := &sudoEnv{env: e, user: "bgs" + suffix, home: filepath.Join(e.dir, "home")}
	if out, err := exec.Command("useradd", "-m", "-d", s.home, "-s", "/bin/sh", s.user).CombinedOutput(); err != nil {
		t.Fatalf("useradd: %v: %s", err, out)
	}
	t.Cleanup(func() {
		// userdel refuses while the user's daemon still runs.
		for _, pid := range processesWithEnv(e.dir) {
			syscall.Kill(pid, syscall.SIGKILL)
			waitGone(t, pid)
		}
		exec.Command("userdel", "-r", s.user).Run()
	})
	u, err := user.Lookup(s.user)
	if err != nil {
		t.Fatal(err)
	}
	s.uid, _ = strconv.Atoi(u.Uid)
	// Firecracker (here the fake) opens its tap through /dev/net/tun as the
	// user. Distributions make it 0666; where it is 0600 (as on these test
	// machines) the user gets an ACL entry for the test's duration.
	if unix.Access("/dev/net/tun", unix.W_OK) == nil && !worldRW("/dev/net/tun") {
		run(t, "setfacl", "-m", "u:"+s.user+":rw", "/dev/net/tun")
		t.Cleanup(func() { exec.Command("setfacl", "-x", "u:"+s.user, "/dev/net/tun").Run() })
	}
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	helperDir := filepath.Join(e.dir, "libexec")
	sudoers := "/etc/sudoers.d/banger-systest-" + suffix
	t.Cleanup(func() { os.Remove(sudoers) })
	if out, err := exec.Command("make", "-s", "-C", root, "install-helper", "HELPER_DIR="+helperDir,
		"SUDOERS_FILE="+sudoers, "HELPER_USER="+s.user).CombinedOutput(); err != nil {
		t.Fatalf("make install-helper: %v: %s", err, out)
	}
	// The user's config: default state dir under its home (the only place
	// the helper works in), the fake Firecracker, and the test helper.
	cfgDir := filepath.Join(s.home, ".config", "banger")
	os.MkdirAll(cfgDir, 0o755)
	cfg, err := os.ReadFile(filepath.Join(e.dir, "config.toml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg = append(cfg, []byte(fmt.Sprintf("helper_path = %q\n", filepath.Join(helperDir, "banger")))...)
	if err := os.WriteFile(filepath.Join(cfgDir, "config.toml"), cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "chown", "-R", s.user+":", s.home)
	// fcfake runs as the user and appends to the shared record file.
	if err := os.WriteFile(e.record, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	os.Chmod(e.record, 0o666)
	e.state = filepath.Join(s.home, ".local", "state", "banger")
	return s
}

func (s *sudoEnv) runAs(extra []string, args ...string) (string, string, int) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	envArgs := append([]string{"HOME=" + s.home, "PATH=" + os.Getenv("PATH"), "XDG_RUNTIME_DIR=" + filepath.Join(s.home, "run"),
		"FCFAKE_RECORD=" + s.record}, extra...)
	argv := append([]string{"netns", "exec", s.ns, "runuser", "-u", s.user, "--", "env", "-i"}, envArgs...)
	argv = append(argv, s.bins.banger)
	argv = append(argv, args...)
	cmd := exec.CommandContext(ctx, "ip", argv...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		s.t.Fatalf("running banger %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

func (s *sudoEnv) okAs(extra []string, args ...string) string {
	s.t.Helper()
	out, errOut, code := s.runAs(extra, args...)
	if code != 0 {
		s.t.Fatalf("banger %s as %s: exit %d\nstdout: %s\nstderr: %s\ndaemon log:\n%s", strings.Join(args, " "), s.user, code, out, errOut, s.daemonLogTail())
	}
	return out
}

func (s *sudoEnv) vmAs(name string) api.VM {
	s.t.Helper()
	var v api.VM
	if err := json.Unmarshal([]byte(s.okAs(nil, "vm", "show", name, "--json")), &v); err != nil {
		s.t.Fatal(err)
	}
	return v
}

func worldRW(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().Perm()&0o006 == 0o006
}

func procUID(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "Uid:") {
			f := strings.Fields(line)
			if len(f) > 1 {
				v, _ := strconv.Atoi(f[1])
				return v
			}
		}
	}
	return -1
}

// TestUnprivilegedDaemonThroughSudo: the lifecycle with bangerd as an
// ordinary user, every root-only step going through real sudo.
func TestUnprivilegedDaemonThroughSudo(t *testing.T) {
	s := newSudoEnv(t)
	img := filepath.Join(s.dir, "img.ext4")
	tree := filepath.Join(s.dir, "tree")
	os.MkdirAll(filepath.Join(tree, "root"), 0o700)
	os.WriteFile(filepath.Join(tree, "root", ".bashrc"), []byte("# bashrc\n"), 0o644)
	os.MkdirAll(filepath.Join(tree, "sbin"), 0o755)
	os.WriteFile(filepath.Join(tree, "sbin", "init"), []byte("#!/bin/sh\n"), 0o755) // register wants an init
	run(t, "mkfs.ext4", "-q", "-F", "-d", tree, img, "32M")
	os.Chmod(img, 0o644)
	s.okAs(nil, "image", "register", "debian", "--rootfs", img)

	out := s.okAs(nil, "vm", "create", "u1", "--nat")
	if !strings.Contains(out, "healthy") {
		t.Fatalf("create: %s", out)
	}
	s.okAs(nil, "vm", "create", "u2")
	var st api.DaemonStatus
	json.Unmarshal([]byte(s.okAs(nil, "daemon", "status", "--json")), &st)
	if st.Privileged != "sudo" || st.Euid != s.uid {
		t.Fatalf("daemon runs as euid %d with %q privileged ops, want %d via sudo", st.Euid, st.Privileged, s.uid)
	}
	for _, n := range []string{"u1", "u2"} {
		v := s.vmAs(n)
		if uid := procUID(v.PID); uid != s.uid {
			t.Fatalf("firecracker of %s runs as uid %d, want %d", n, uid, s.uid)
		}
	}
	if len(s.taps()) != 2 || s.natMembers() != s.vmAs("u1").IP {
		t.Fatalf("taps %v nat %q", s.taps(), s.natMembers())
	}

	// Graceful stop, then a forced one with a daemon whose guests ignore Ctrl-Alt-Del.
	s.okAs(nil, "vm", "stop", "u1")
	s.okAs(nil, "daemon", "stop")
	ignore := []string{"FCFAKE_IGNORE_CTRL_ALT_DEL=1"}
	s.okAs(ignore, "daemon", "start")
	s.okAs(ignore, "vm", "start", "u1")
	t0 := time.Now()
	s.okAs(ignore, "vm", "stop", "u1")
	if time.Since(t0) > 5*time.Second {
		t.Fatalf("forced stop took %s", time.Since(t0))
	}

	// Rediscovery: kill the daemon; the next one adopts u2 and stops it.
	s.okAs(nil, "vm", "start", "u1")
	syscall.Kill(st.PID, syscall.SIGKILL)
	s.okAs(nil, "daemon", "stop") // the ignore daemon from above
	u2 := s.vmAs("u2")
	if u2.State != api.StateRunning {
		t.Fatalf("u2 not adopted: %s", u2.State)
	}
	s.okAs(nil, "vm", "stop", "u2")
	if alive(u2.PID) {
		t.Fatal("u2's firecracker survived stop after rediscovery")
	}
	s.okAs(nil, "vm", "delete", "u1", "u2")

	if taps := s.taps(); len(taps) != 0 {
		t.Fatalf("taps left: %v", taps)
	}
	if p := s.fcProcesses(); len(p) != 0 {
		t.Fatalf("processes left: %v", p)
	}
	if m := s.natMembers(); m != "" {
		t.Fatalf("nat left: %q", m)
	}
	if ents, _ := os.ReadDir(filepath.Join(s.state, "vms")); len(ents) != 0 {
		t.Fatalf("vm dirs left: %v", ents)
	}
	logb, _ := os.ReadFile(filepath.Join(s.state, "bangerd.log"))
	if strings.Contains(strings.ToLower(string(logb)), "permission denied") {
		t.Fatalf("permission errors in the daemon log:\n%s", logb)
	}
	s.okAs(nil, "daemon", "stop")
}
