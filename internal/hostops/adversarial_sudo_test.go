package hostops

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/blockdev"
)

// needAdversarial skips unless the privileged tier can run here.
func needAdversarial(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the adversarial suite makes root-owned targets, loop devices and a test user")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skip("needs loop devices: /dev/loop-control missing")
	}
	haveTools(t, "mkfs.ext4", "debugfs")
}

// attachVictims attaches loop devices to an outside root-owned file and to
// the caller's own file outside the roots: objects the caller must never
// be able to detach or build on.
func attachVictims(t *testing.T, w *advWorld) {
	for name, p := range map[string]string{"secret": w.Secret, "own": filepath.Join(w.OutsideUser, "own-disk")} {
		f, err := os.Open(p)
		must(t, err)
		dev, lf, err := blockdev.AttachLoop(f, true, false)
		f.Close()
		must(t, err)
		lf.Close()
		w.Victims[name] = dev
	}
}

// detachUnder detaches every loop device whose backing file lies under dir.
func detachUnder(dir string) {
	devs, _ := filepath.Glob("/sys/block/loop*")
	for _, d := range devs {
		dev := "/dev/" + filepath.Base(d)
		if b, _ := blockdev.LoopBacking(sysRoot, dev); strings.HasPrefix(b, dir+"/") {
			if lf, err := blockdev.OpenLoop(dev); err == nil {
				blockdev.Detach(lf)
				lf.Close()
			}
		}
	}
}

// loopsOnOutside lists loop devices bound (by inode) to an outside file,
// other than the victims.
func loopsOnOutside(w *advWorld) []string {
	victims := map[string]bool{}
	for _, v := range w.Victims {
		victims[v] = true
	}
	var out []string
	devs, _ := filepath.Glob("/sys/block/loop*")
	for _, d := range devs {
		dev := "/dev/" + filepath.Base(d)
		lf, err := blockdev.OpenLoop(dev)
		if err != nil {
			continue
		}
		lo, err := blockdev.Status(lf)
		lf.Close()
		if err != nil || victims[dev] {
			continue
		}
		for _, p := range w.Paths {
			var st unix.Stat_t
			if unix.Lstat(p, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG && lo.Same(st) {
				out = append(out, fmt.Sprintf("%s is bound to %s", dev, p))
			}
		}
	}
	return out
}

// checkAfter is the end-of-suite check, as root: contents unchanged, no
// stray loop on an outside file, the victims still in place.
func checkAfter(t *testing.T, w *advWorld, contents map[string]string, snap outsideSnapshot, events []string) {
	t.Helper()
	var bad []string
	bad = append(bad, events...)
	bad = append(bad, snap.diff()...)
	for p, body := range w.contents() {
		if contents[p] != body {
			bad = append(bad, fmt.Sprintf("contents of %s changed", p))
		}
	}
	bad = append(bad, loopsOnOutside(w)...)
	for name, v := range w.Victims {
		want := w.Secret
		if name == "own" {
			want = filepath.Join(w.OutsideUser, "own-disk")
		}
		if b, _ := blockdev.LoopBacking(sysRoot, v); b != want {
			bad = append(bad, fmt.Sprintf("victim loop %s is backed by %q, not %s", v, b, want))
		}
	}
	if len(bad) > 0 {
		t.Fatalf("outside the roots after the suite:\n  %s", strings.Join(bad, "\n  "))
	}
}

// freeUID returns a uid no user has.
func freeUID() int {
	for uid := 61000 + os.Getpid()%1000; ; uid++ {
		if _, err := user.LookupId(strconv.Itoa(uid)); err != nil {
			return uid
		}
	}
}

// fakeScripts installs root-owned image scripts whose chroot step does
// nothing, and points the helper's script look-up at them.
func fakeScripts(t *testing.T, base string) {
	dir := filepath.Join(base, "libexec")
	for p, body := range map[string]string{"banger": "not run\n", "images/packages.apt": "openssh-server\n",
		"images/debian/customize.sh": "#!/bin/sh\nexit 0\n", "images/debian/enter-chroot.sh": "exit 0\n"} {
		must(t, os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755))
		must(t, os.WriteFile(filepath.Join(dir, p), []byte(body), 0o644))
	}
	old := helperExecutable
	helperExecutable = func() (string, error) { return filepath.Join(dir, "banger"), nil }
	t.Cleanup(func() { helperExecutable = old })
}

func advBase(t *testing.T) string {
	base, err := os.MkdirTemp("/tmp", "bangeradv-")
	must(t, err)
	must(t, os.Chmod(base, 0o755))
	t.Cleanup(func() {
		detachUnder(base)
		os.RemoveAll(base)
	})
	return base
}

// TestAdversarialInProcess runs every path-taking op through dispatch, as
// a caller of another uid, while attacker goroutines race it.
func TestAdversarialInProcess(t *testing.T) {
	needAdversarial(t)
	base := advBase(t)
	uid := freeUID()
	w := newAdvWorld(t, base, uid, uid)
	attachVictims(t, w)
	fakeScripts(t, base)
	c := Caller{UID: uid, GID: uid, Roots: w.Roots}
	call := func(ctx context.Context, op string, args, out any) error {
		return callDispatch(ctx, c, op, args, out)
	}
	contents := w.contents()
	snap := w.snapshot()
	wt := w.watch(t)
	defer wt.close()
	start := time.Now()
	t.Run("static", func(t *testing.T) { runStatic(t, w, call, true, wt) })
	for _, sc := range advScenarios() {
		t.Run(sc.op, func(t *testing.T) {
			runScenario(t, w, sc, call, true, runsScaled(sc.runs), wt)
		})
	}
	t.Logf("in-process suite: %s", time.Since(start).Round(time.Millisecond))
	events := wt.events()
	checkAfter(t, w, contents, snap, events)
}

// TestAdversarialSudo runs the same scenarios through real sudo: the
// client half and its attackers run as a throwaway unprivileged user, the
// helper is installed with `make install-helper`, and this (root) half
// watches the outside targets the whole time.
func TestAdversarialSudo(t *testing.T) {
	needAdversarial(t)
	haveTools(t, "sudo", "useradd", "userdel", "runuser", "visudo", "make")
	base := advBase(t)
	suffix := fmt.Sprintf("%d", time.Now().UnixNano()%1000000)
	name := "bga" + suffix
	home := filepath.Join(base, "home")
	if out, err := exec.Command("useradd", "-M", "-d", home, "-s", "/bin/sh", name).CombinedOutput(); err != nil {
		t.Fatalf("useradd: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("userdel", name).Run() })
	u, err := user.Lookup(name)
	must(t, err)
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	w := newAdvWorld(t, base, uid, gid)
	attachVictims(t, w)
	helperDir := filepath.Join(base, "libexec")
	sudoers := "/etc/sudoers.d/banger-adv-" + suffix
	t.Cleanup(func() { os.Remove(sudoers) })
	mk := exec.Command("make", "-s", "-C", moduleRoot(t), "install-helper", "HELPER_DIR="+helperDir, "SUDOERS_FILE="+sudoers, "HELPER_USER="+name)
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("make install-helper: %v: %s", err, out)
	}
	self, err := os.Executable()
	must(t, err)
	bin := filepath.Join(base, "hostops.test")
	copyFile(t, self, bin, 0o755)

	contents := w.contents()
	snap := w.snapshot()
	wt := w.watch(t)
	defer wt.close()
	start := time.Now()
	cmd := exec.Command("runuser", "-u", name, "--", "env", "HOME="+home, "PATH="+os.Getenv("PATH"),
		"BANGER_ADV_WORLD="+encodeWorld(w), "BANGER_ADV_HELPER="+filepath.Join(helperDir, "banger"),
		"BANGER_ADV_SCALE="+os.Getenv("BANGER_ADV_SCALE"),
		bin, "-test.run=^TestAdversarialSudoClientHalf$", "-test.v", "-test.count=1", "-test.timeout=10m")
	out, err := cmd.CombinedOutput()
	t.Logf("client half as %s (%s):\n%s", name, time.Since(start).Round(time.Millisecond), out)
	if err != nil {
		t.Fatalf("client half failed: %v", err)
	}
	if !strings.Contains(string(out), "--- PASS: TestAdversarialSudoClientHalf") {
		t.Fatal("client half did not run")
	}
	events := wt.events()
	// The staging tree holds what the customize runs copied: the caller's
	// agent and modules, never an outside file.
	if bad := stagedFromOutside(w.Staging, advAgent); bad != "" {
		t.Error(bad)
	}
	checkAfter(t, w, contents, snap, events)
}

// TestAdversarialSudoClientHalf runs only when TestAdversarialSudo starts
// it as the unprivileged user.
func TestAdversarialSudoClientHalf(t *testing.T) {
	raw := os.Getenv("BANGER_ADV_WORLD")
	if raw == "" {
		t.Skip("runs only as the unprivileged half of TestAdversarialSudo")
	}
	if os.Geteuid() == 0 {
		t.Fatal("the client half must not run as root")
	}
	var w advWorld
	must(t, json.Unmarshal([]byte(raw), &w))
	cl := New(Options{HelperPath: os.Getenv("BANGER_ADV_HELPER")})
	if cl.Mode() != "sudo" {
		t.Fatalf("mode %s, want sudo", cl.Mode())
	}
	t.Run("static", func(t *testing.T) { runStatic(t, &w, cl.call, false, nil) })
	for _, sc := range advScenarios() {
		t.Run(sc.op, func(t *testing.T) {
			runScenario(t, &w, sc, cl.call, false, runsScaled(sc.sudoRuns), nil)
		})
	}
}
