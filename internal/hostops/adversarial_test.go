package hostops

// The adversarial suite: every op that takes a path runs thousands of times
// while an attacker with the caller's rights flips a parent directory with
// renameat2(RENAME_EXCHANGE) between the real directory and a symlink to a
// directory outside the roots (at two depths: the directory holding the
// targets and the root itself) and swaps the final component for a
// symlink, a hard link, a FIFO or a device node. Outside targets are
// root-owned (one 0600 with known contents) plus files of the caller's
// that lie outside the roots. After every run nothing outside may have
// been created, changed (owner, mode, size, mtime), deleted, or opened
// (inotify on every outside file and directory: open, access, modify,
// close-write, create, delete, move); contents are compared at the end.
//
// It runs in-process (TestAdversarialInProcess: ops through dispatch as a
// caller of another uid, attackers as goroutines) and through real sudo
// (TestAdversarialSudo: `make install-helper` for a throwaway user, the
// client half and its attackers re-executed as that user).

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"
)

// advWorld is the layout both halves share (JSON to the sudo client half).
type advWorld struct {
	Base        string            `json:"base"`
	Home        string            `json:"home"`
	UID         int               `json:"uid"`
	GID         int               `json:"gid"`
	Roots       []string          `json:"roots"`
	State       string            `json:"state"`        // the state root
	D           string            `json:"d"`            // State/d, where the targets are
	Outside     string            `json:"outside"`      // root-owned; Outside/d mirrors D
	OutsideUser string            `json:"outside_user"` // the caller's files outside the roots
	Secret      string            `json:"secret"`       // Outside/d/secret, root 0600
	Victims     map[string]string `json:"victims"`      // loop devices of outside files
	Staging     string            `json:"staging"`      // an image staging dir of the caller's
	Protected   bool              `json:"protected"`    // fs.protected_hardlinks is on
	Paths       []string          `json:"paths"`        // every outside file and directory
	SeedImage   string            `json:"seed_image"`   // an ext4 with /root/.bashrc to copy in
	Key         string            `json:"key"`          // an authorized_keys line
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// newAdvWorld lays out, as root, a home for uid with its two roots, the
// directory d in the state root, and the outside targets.
func newAdvWorld(t *testing.T, base string, uid, gid int) *advWorld {
	t.Helper()
	w := &advWorld{Base: base, Home: filepath.Join(base, "home"), UID: uid, GID: gid, Victims: map[string]string{}}
	w.Roots = UserRoots(w.Home)
	w.State = w.Roots[0]
	w.D = filepath.Join(w.State, "d")
	w.Outside = filepath.Join(base, "outside")
	w.OutsideUser = filepath.Join(base, "outside-user")
	w.Secret = filepath.Join(w.Outside, "d", "secret")
	b, _ := os.ReadFile("/proc/sys/fs/protected_hardlinks")
	w.Protected = strings.TrimSpace(string(b)) == "1"
	for _, d := range []string{w.Home, filepath.Join(w.Home, ".local"), filepath.Join(w.Home, ".local", "state"),
		filepath.Join(w.Home, ".local", "share"), w.State, w.Roots[1], w.D, w.OutsideUser} {
		must(t, os.MkdirAll(d, 0o755))
		must(t, os.Chown(d, uid, gid))
	}
	od := filepath.Join(w.Outside, "d")
	for _, d := range []string{w.Outside, od, filepath.Join(od, "vms"), filepath.Join(od, "modules", "6.1.0", "kernel")} {
		must(t, os.MkdirAll(d, 0o755))
	}
	for name, body := range map[string]string{
		"secret": "top secret " + randHex(8), "disk.img": "outside disk", "disk2.img": "outside disk 2", "agent": "outside agent",
		"rootfs.img": "outside rootfs", "modules/6.1.0/kernel/secret.ko": "outside module", "modules/6.1.0/kernel/a.ko": "outside a.ko",
	} {
		must(t, os.WriteFile(filepath.Join(od, name), []byte(body), 0o600))
	}
	for name, body := range map[string]string{"own": "the caller's file outside the roots", "own-disk": ""} {
		p := filepath.Join(w.OutsideUser, name)
		must(t, os.WriteFile(p, []byte(body), 0o600))
		must(t, os.Chown(p, uid, gid))
	}
	must(t, os.Truncate(filepath.Join(w.OutsideUser, "own-disk"), 1<<20))
	// The symlinks the parent flipper exchanges with the real directories.
	for link, target := range map[string]string{filepath.Join(w.State, "d.alt"): od,
		filepath.Join(w.Home, ".local", "state", "banger.alt"): w.Outside} {
		must(t, os.Symlink(target, link))
		must(t, os.Lchown(link, uid, gid))
	}
	// Images: the one the caller seeds from (copied into d by the
	// scenario) and an outside one whose /root holds a secret.
	tree := filepath.Join(base, "tree")
	must(t, os.MkdirAll(filepath.Join(tree, "root"), 0o700))
	must(t, os.WriteFile(filepath.Join(tree, "root", ".bashrc"), []byte("# inside\n"), 0o644))
	w.SeedImage = filepath.Join(base, "seed-template.ext4")
	runT(t, "mkfs.ext4", "-q", "-F", "-d", tree, w.SeedImage, "4M")
	must(t, os.Chmod(w.SeedImage, 0o644))
	must(t, os.WriteFile(filepath.Join(tree, "root", "SECRET"), []byte("outside\n"), 0o600))
	runT(t, "mkfs.ext4", "-q", "-F", "-d", tree, filepath.Join(od, "img.ext4"), "4M")
	must(t, os.Chmod(filepath.Join(od, "img.ext4"), 0o600))
	must(t, os.RemoveAll(tree))
	staging, err := makeStaging(Caller{UID: uid, GID: gid})
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(staging) })
	w.Staging = staging
	for _, d := range []string{"root/tmp", "root/lib", "root/etc"} {
		must(t, os.MkdirAll(filepath.Join(staging, d), 0o755))
	}
	must(t, os.WriteFile(filepath.Join(staging, "root", "etc", "hostname"), []byte("banger\n"), 0o644))
	pub, _, err := ed25519.GenerateKey(nil)
	must(t, err)
	sk, err := ssh.NewPublicKey(pub)
	must(t, err)
	w.Key = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sk)))
	w.Paths = w.outsidePaths()
	return w
}

func runT(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// outsidePaths lists every outside file and directory (once, at setup:
// reading a directory raises inotify events).
func (w *advWorld) outsidePaths() []string {
	var out []string
	for _, top := range []string{w.Outside, w.OutsideUser} {
		filepath.Walk(top, func(p string, fi os.FileInfo, err error) error {
			if err == nil {
				out = append(out, p)
			}
			return nil
		})
	}
	sort.Strings(out)
	return out
}

// target is a name the final-component swapper attacks: in the directory
// dir (relative to d, "" for d itself), name is exchanged with
// name+"."+decoy in decoyDir (default dir, "." for d) for each decoy, which the
// scenario creates. With absent, name does not normally exist and a decoy
// is moved into its place and back.
type target struct {
	dir      string
	decoyDir string
	name     string
	decoys   []string
	absent   bool
}

// attackers are the parent flipper and the final-component swapper. Each
// bad state is held inside mu.RLock, so pause (mu.Lock) waits until every
// path is back to its real shape.
type attackers struct {
	mu       sync.RWMutex
	stop     atomic.Bool
	wg       sync.WaitGroup
	flips    atomic.Int64
	swaps    atomic.Int64
	failures atomic.Int64
	errs     chan error
}

func (a *attackers) pause(f func()) {
	a.mu.Lock()
	defer a.mu.Unlock()
	f()
}

// jitter waits 0 to ~40µs, so states last about as long as an op's steps.
func jitter() {
	if n := mrand.IntN(4); n > 0 {
		time.Sleep(time.Duration(mrand.IntN(20)) * time.Microsecond)
	}
}

func exchange(dfd int, a, b string) error {
	return unix.Renameat2(dfd, a, dfd, b, unix.RENAME_EXCHANGE)
}

// start runs the attackers until stopAll. rootFd is the real state root,
// stateFd its parent, dFd the real d.
func (a *attackers) start(stateFd, rootFd, dFd int, targets []target) error {
	a.errs = make(chan error, 2)
	dirFds := map[string]int{"": dFd, ".": dFd}
	for i, t := range targets {
		if t.decoyDir == "" {
			targets[i].decoyDir = t.dir
		}
		for _, dir := range []string{t.dir, t.decoyDir} {
			if _, ok := dirFds[dir]; !ok {
				fd, err := unix.Openat(dFd, dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
				if err != nil {
					return fmt.Errorf("opening %s: %w", dir, err)
				}
				dirFds[dir] = fd
			}
		}
	}
	a.wg.Add(2)
	go func() { // parent flipper
		defer a.wg.Done()
		for !a.stop.Load() {
			fd, x, y := rootFd, "d", "d.alt"
			if mrand.IntN(4) == 0 {
				fd, x, y = stateFd, "banger", "banger.alt"
			}
			a.mu.RLock()
			err := exchange(fd, x, y)
			if err == nil {
				a.flips.Add(1)
				jitter()
				err = exchange(fd, x, y)
			}
			a.mu.RUnlock()
			if err != nil {
				a.errs <- fmt.Errorf("parent flipper: %s <-> %s: %w", x, y, err)
				return
			}
			jitter()
		}
	}()
	go func() { // final-component swapper
		defer a.wg.Done()
		if len(targets) == 0 {
			return
		}
		for !a.stop.Load() {
			t := targets[mrand.IntN(len(targets))]
			decoy := t.name + "." + t.decoys[mrand.IntN(len(t.decoys))]
			fd, dd := dirFds[t.dir], dirFds[t.decoyDir]
			a.mu.RLock()
			var err error
			if t.absent {
				// Only while the name is free (not an op's fresh output).
				if err = unix.Renameat2(dd, decoy, fd, t.name, unix.RENAME_NOREPLACE); err == nil {
					a.swaps.Add(1)
					jitter()
					err = unix.Renameat2(fd, t.name, dd, decoy, unix.RENAME_NOREPLACE)
				} else if errors.Is(err, unix.EEXIST) || errors.Is(err, unix.ENOENT) {
					a.failures.Add(1)
					err = nil
				}
			} else if err = unix.Renameat2(fd, t.name, dd, decoy, unix.RENAME_EXCHANGE); err == nil {
				a.swaps.Add(1)
				jitter()
				err = unix.Renameat2(fd, t.name, dd, decoy, unix.RENAME_EXCHANGE)
			}
			a.mu.RUnlock()
			if err != nil {
				a.errs <- fmt.Errorf("swapper: %s <-> %s: %w", t.name, decoy, err)
				return
			}
			jitter()
		}
	}()
	return nil
}

// stopAll stops the attackers and returns the first error one hit.
func (a *attackers) stopAll() error {
	a.stop.Store(true)
	a.wg.Wait()
	select {
	case err := <-a.errs:
		return err
	default:
		return nil
	}
}

// opCaller runs one op: dispatch in-process, the sudo Client otherwise.
type opCaller func(ctx context.Context, op string, args, out any) error

// advRun is one scenario's run loop as the attacking process sees it.
type advRun struct {
	t      testing.TB
	w      *advWorld
	call   opCaller
	root   bool // the attacking process is root (in-process mode)
	a      *attackers
	dFd    int // the real d
	rootFd int // the real state root
	// counts
	runs, ok, through, refused, otherErr int
	sample                               []string
}

// recordThrough counts a run that got through every caller path and
// stopped at its first tool (a cancelled context).
func (x *advRun) recordThrough() {
	x.runs++
	x.through++
}

// record classifies one run's error.
func (x *advRun) record(err error) bool {
	x.runs++
	switch {
	case err == nil:
		x.ok++
		return true
	case errors.Is(err, ErrRefused):
		x.refused++
		if x.refused <= 3 {
			x.sample = append(x.sample, err.Error())
		}
	default:
		x.otherErr++
		if x.otherErr <= 3 {
			x.sample = append(x.sample, "error: "+err.Error())
		}
	}
	return false
}

// mkfile makes a file of the caller's in the real d (rel to it).
func (x *advRun) mkfile(rel, body string, size int64, mode uint32) {
	x.t.Helper()
	fd, err := unix.Openat(x.dFd, rel, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode)
	must(x.t, err)
	f := os.NewFile(uintptr(fd), rel)
	defer f.Close()
	_, err = f.WriteString(body)
	must(x.t, err)
	if size > 0 {
		must(x.t, f.Truncate(size))
	}
	x.chown(fd, "")
}

func (x *advRun) chown(fd int, name string) {
	if x.root {
		flags := unix.AT_SYMLINK_NOFOLLOW
		if name == "" {
			flags = unix.AT_EMPTY_PATH
		}
		must(x.t, unix.Fchownat(fd, name, x.w.UID, x.w.GID, flags))
	}
}

func (x *advRun) mkdir(rel string) {
	x.t.Helper()
	must(x.t, unix.Mkdirat(x.dFd, rel, 0o755))
	x.chown(x.dFd, rel)
}

// decoys makes name.sym (-> the same path in the outside mirror),
// name.hard (a hard link to the root-owned secret, where the kernel allows
// it), name.hardown (a hard link to the caller's own file outside the
// roots), name.fifo and, as root, name.dev (a character device). It
// returns the decoys made.
func (x *advRun) decoys(rel string) []string { return x.decoysTo(rel, rel) }

// decoysTo is decoys with the symlink pointing at outsideRel in the mirror.
func (x *advRun) decoysTo(rel, outsideRel string) []string {
	x.t.Helper()
	var made []string
	sym := filepath.Join(x.w.Outside, "d", outsideRel)
	must(x.t, unix.Symlinkat(sym, x.dFd, rel+".sym"))
	x.chown(x.dFd, rel+".sym")
	made = append(made, "sym")
	if err := unix.Linkat(unix.AT_FDCWD, x.w.Secret, x.dFd, rel+".hard", 0); err == nil {
		made = append(made, "hard")
	} else if !errors.Is(err, unix.EPERM) {
		x.t.Fatalf("hard link to %s: %v", x.w.Secret, err)
	}
	must(x.t, unix.Linkat(unix.AT_FDCWD, filepath.Join(x.w.OutsideUser, "own"), x.dFd, rel+".hardown", 0))
	made = append(made, "hardown")
	must(x.t, unix.Mkfifoat(x.dFd, rel+".fifo", 0o600))
	x.chown(x.dFd, rel+".fifo")
	made = append(made, "fifo")
	if x.root {
		must(x.t, unix.Mknodat(x.dFd, rel+".dev", unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))))
		x.chown(x.dFd, rel+".dev")
		made = append(made, "dev")
	}
	return made
}

// scenario is one op under attack.
type scenario struct {
	op       string
	runs     int // in-process
	sudoRuns int
	// setup makes the targets in the real d (attackers not yet running)
	// and returns what the swapper attacks.
	setup func(x *advRun) []target
	// run performs the op once; it checks a success and undoes it (with
	// x.a.pause when paths must be in their real shape).
	run func(ctx context.Context, x *advRun, i int)
}

// runScenario runs sc n times under attack and checks the outside after
// every run (lstat: no inotify event) and, in-process, the watcher.
func runScenario(t *testing.T, w *advWorld, sc scenario, call opCaller, root bool, n int, wt *watcher) {
	t.Helper()
	stateFd, err := unix.Open(filepath.Dir(w.State), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	must(t, err)
	defer unix.Close(stateFd)
	rootFd, err := unix.Openat(stateFd, "banger", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	must(t, err)
	defer unix.Close(rootFd)
	dir := "s-" + randHex(4) // a fresh d per scenario
	must(t, unix.Mkdirat(rootFd, dir, 0o755))
	if root {
		must(t, unix.Fchownat(rootFd, dir, w.UID, w.GID, 0))
	}
	// The scenario's d is the one the flipper exchanges with d.alt.
	must(t, unix.Renameat2(rootFd, dir, rootFd, "d", unix.RENAME_EXCHANGE))
	dFd, err := unix.Openat(rootFd, "d", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	must(t, err)
	defer unix.Close(dFd)
	x := &advRun{t: t, w: w, call: call, root: root, a: &attackers{}, dFd: dFd, rootFd: rootFd}
	targets := sc.setup(x)
	before := w.snapshot()
	must(t, x.a.start(stateFd, rootFd, dFd, targets))
	ctx := context.Background()
	start := time.Now()
	var violations []string
	for i := 0; i < n && len(violations) == 0; i++ {
		sc.run(ctx, x, i)
		violations = append(violations, before.diff()...)
		if wt != nil {
			violations = append(violations, wt.events()...)
		}
	}
	aerr := x.a.stopAll()
	t.Logf("%s (%s): %d runs in %s, %d parent flips, %d final-component swaps (%d skipped), %d refused, %d succeeded, %d through every path to a cancelled tool, %d other errors",
		sc.op, map[bool]string{true: "in-process", false: "sudo"}[root], x.runs, time.Since(start).Round(time.Millisecond),
		x.a.flips.Load(), x.a.swaps.Load(), x.a.failures.Load(), x.refused, x.ok, x.through, x.otherErr)
	for _, s := range x.sample {
		t.Logf("  e.g. %s", s)
	}
	if aerr != nil {
		t.Fatalf("attacker: %v", aerr)
	}
	if len(violations) > 0 {
		t.Fatalf("%s under attack touched the outside (run %d):\n  %s", sc.op, x.runs, strings.Join(violations, "\n  "))
	}
	if x.ok == 0 || x.refused == 0 {
		t.Errorf("%s: %d successes and %d refusals in %d runs; the attack or the op is not working", sc.op, x.ok, x.refused, x.runs)
	}
	// Put the previous d back for the next scenario.
	must(t, unix.Renameat2(rootFd, "d", rootFd, dir, unix.RENAME_EXCHANGE))
}

// runsScaled scales an iteration count by BANGER_ADV_SCALE (default 1),
// for a longer soak than CI's.
func runsScaled(n int) int {
	var s float64 = 1
	if v := os.Getenv("BANGER_ADV_SCALE"); v != "" {
		fmt.Sscan(v, &s)
	}
	return max(1, int(float64(n)*s))
}

// haveTools skips unless every tool is installed.
func haveTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (CI installs it)", tool)
		}
	}
}

func encodeWorld(w *advWorld) string {
	b, _ := json.Marshal(w)
	return string(b)
}
