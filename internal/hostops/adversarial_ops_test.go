package hostops

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"banger/internal/blockdev"
)

// Iterations. In-process every op runs 2,000 times. Through sudo every
// run is a sudo and a helper process (~11 ms on CI's two cores with the
// attackers running), and the whole suite must add under a minute to CI:
// ensure-state-dirs runs 1,000 times, the loop ops 500 (a success costs a
// second sudo call to undo), and the ops that run tools 200 times, all of
// them to the end. BANGER_ADV_SCALE multiplies every count for a soak.
//
// In-process, the ops that run tools (seed-work-disk: debugfs and mkfs;
// image-customize: the chroot script; image-mkfs: mkfs) get a cancelled
// context in all but every twentieth run: the op still resolves, checks,
// opens, creates, truncates and copies every caller path it takes (all of
// that happens before its first tool) and cleans up when the tool cannot
// start, so the attack window is the same; every twentieth run goes all
// the way. (A context does not cross sudo: there every run is whole.)
const (
	advRuns      = 2000
	advSudoCheap = 1000
	advSudoLoop  = 500
	advSudoTools = 200
	advFullEvery = 20
)

// toolCtx is the context of run i of an op that runs tools.
func (x *advRun) toolCtx(ctx context.Context, i int) context.Context {
	if !x.root || i%advFullEvery == 0 {
		return ctx
	}
	c, cancel := context.WithCancel(ctx)
	cancel()
	return c
}

// cancelledTool reports whether run i, given a cancelled context, failed
// only because its first tool could not start.
func (x *advRun) cancelledTool(err error, i int) bool {
	return x.root && i%advFullEvery != 0 && err != nil && !errors.Is(err, ErrRefused) && strings.Contains(err.Error(), "context canceled")
}

func (x *advRun) fatalf(format string, args ...any) {
	x.t.Helper()
	x.t.Fatalf("VIOLATION after %d runs: "+format, append([]any{x.runs}, args...)...)
}

// fstatIn stats rel beneath the real d without following a symlink.
func (x *advRun) fstatIn(rel string) (unix.Stat_t, error) {
	var st unix.Stat_t
	err := unix.Fstatat(x.dFd, rel, &st, unix.AT_SYMLINK_NOFOLLOW)
	return st, err
}

func (x *advRun) path(rel string) string { return filepath.Join(x.w.D, rel) }

func advScenarios() []scenario {
	return []scenario{ensureScenario(), loopAttachScenario(), loopDetachScenario(), seedScenario(), customizeScenario(), mkfsScenario()}
}

func ensureScenario() scenario {
	return scenario{
		op: "ensure-state-dirs", runs: advRuns, sudoRuns: advSudoCheap,
		setup: func(x *advRun) []target {
			x.mkdir("vms")
			must(x.t, unix.Symlinkat(filepath.Join(x.w.Outside, "d", "vms"), x.dFd, "vms.sym"))
			x.chown(x.dFd, "vms.sym")
			must(x.t, unix.Mkfifoat(x.dFd, "vms.fifo", 0o600))
			x.chown(x.dFd, "vms.fifo")
			must(x.t, unix.Symlinkat(filepath.Join(x.w.Outside, "d", "vms", "x"), x.dFd, "vms/x.sym"))
			x.chown(x.dFd, "vms/x.sym")
			return []target{{name: "vms", decoys: []string{"sym", "fifo"}}, {dir: "vms", name: "x", decoys: []string{"sym"}, absent: true}}
		},
		run: func(ctx context.Context, x *advRun, i int) {
			err := x.call(ctx, "ensure-state-dirs", StateDirsArgs{Dirs: []string{x.path("vms/x")}}, nil)
			if !x.record(err) {
				return
			}
			x.a.pause(func() {
				st, err := x.fstatIn("vms/x")
				if err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR || int(st.Uid) != x.w.UID || st.Mode&0o7777 != 0o700 {
					x.fatalf("ensure-state-dirs succeeded but vms/x is %+v (%v)", st, err)
				}
				must(x.t, unix.Unlinkat(x.dFd, "vms/x", unix.AT_REMOVEDIR))
			})
		},
	}
}

// loopOf reads a loop device's backing: by inode as root, by the sysfs
// name otherwise (the unprivileged half cannot open /dev/loopN).
func (x *advRun) backedBy(dev, rel string) bool {
	if x.root {
		lf, err := blockdev.OpenLoop(dev)
		if err != nil {
			return false
		}
		defer lf.Close()
		lo, err := blockdev.Status(lf)
		st, serr := x.fstatIn(rel)
		return err == nil && serr == nil && lo.Same(st)
	}
	b, err := blockdev.LoopBacking(sysRoot, dev)
	return err == nil && b == x.path(rel)
}

// detach undoes a successful attach of the caller's file rel (paused).
func (x *advRun) detach(ctx context.Context, dev, rel string) {
	if x.root {
		lf, err := blockdev.OpenLoop(dev)
		must(x.t, err)
		must(x.t, blockdev.Detach(lf))
		lf.Close()
		return
	}
	must(x.t, x.call(ctx, "loop-detach", LoopDetachArgs{Device: dev, Backing: x.path(rel)}, nil))
}

func loopAttachScenario() scenario {
	return scenario{
		op: "loop-attach", runs: advRuns, sudoRuns: advSudoLoop,
		setup: func(x *advRun) []target {
			x.mkfile("disk.img", "", 1<<20, 0o600)
			return []target{{name: "disk.img", decoys: x.decoys("disk.img")}}
		},
		run: func(ctx context.Context, x *advRun, i int) {
			var r LoopAttachResult
			err := x.call(ctx, "loop-attach", LoopAttachArgs{Path: x.path("disk.img"), ReadOnly: i%2 == 0}, &r)
			if !x.record(err) {
				return
			}
			x.a.pause(func() {
				if !x.backedBy(r.Device, "disk.img") {
					b, _ := blockdev.LoopBacking(sysRoot, r.Device)
					x.fatalf("loop-attach attached %s to %q, not the caller's disk.img", r.Device, b)
				}
				x.detach(ctx, r.Device, "disk.img")
			})
		},
	}
}

func loopDetachScenario() scenario {
	var own string // the caller's loop over disk2.img
	attach := func(ctx context.Context, x *advRun) {
		if x.root {
			fd, err := unix.Openat(x.dFd, "disk2.img", unix.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			must(x.t, err)
			f := os.NewFile(uintptr(fd), "disk2.img")
			dev, lf, err := blockdev.AttachLoop(f, false, false)
			f.Close()
			must(x.t, err)
			lf.Close()
			own = dev
			return
		}
		var r LoopAttachResult
		must(x.t, x.call(ctx, "loop-attach", LoopAttachArgs{Path: x.path("disk2.img")}, &r))
		own = r.Device
	}
	return scenario{
		op: "loop-detach", runs: advRuns, sudoRuns: advSudoLoop,
		setup: func(x *advRun) []target {
			x.mkfile("disk2.img", "", 1<<20, 0o600)
			attach(context.Background(), x)
			return []target{{name: "disk2.img", decoys: x.decoys("disk2.img")}}
		},
		run: func(ctx context.Context, x *advRun, i int) {
			// Two of three requests name another file's loop (the
			// root-owned secret's, the caller's own file outside the
			// roots) with the caller's backing path: always refused.
			victim := []string{"", x.w.Victims["secret"], x.w.Victims["own"]}[i%3]
			dev := own
			if victim != "" {
				dev = victim
			}
			err := x.call(ctx, "loop-detach", LoopDetachArgs{Device: dev, Backing: x.path("disk2.img")}, nil)
			ok := x.record(err)
			for name, v := range x.w.Victims {
				if b, _ := blockdev.LoopBacking(sysRoot, v); b == "" {
					x.fatalf("loop-detach detached %s, the loop of the outside file %s", v, name)
				}
			}
			if ok && victim != "" {
				x.fatalf("loop-detach accepted %s (backed by an outside file) as the caller's", victim)
			}
			if ok {
				x.a.pause(func() {
					if b, _ := blockdev.LoopBacking(sysRoot, own); b != "" {
						x.fatalf("loop-detach succeeded but %s is still backed by %s", own, b)
					}
					attach(ctx, x)
				})
			}
		},
	}
}

func seedScenario() scenario {
	return scenario{
		op: "seed-work-disk", runs: advRuns, sudoRuns: advSudoTools,
		setup: func(x *advRun) []target {
			b, err := os.ReadFile(x.w.SeedImage)
			must(x.t, err)
			x.mkfile("img.ext4", string(b), 0, 0o600)
			must(x.t, unix.Symlinkat(filepath.Join(x.w.Outside, "d", "seed.ext4"), x.dFd, "seed.ext4.sym"))
			x.chown(x.dFd, "seed.ext4.sym")
			return []target{{name: "img.ext4", decoys: x.decoys("img.ext4")}, {name: "seed.ext4", decoys: []string{"sym"}, absent: true}}
		},
		run: func(ctx context.Context, x *advRun, i int) {
			err := x.call(x.toolCtx(ctx, i), "seed-work-disk", SeedArgs{Image: x.path("img.ext4"), Out: x.path("seed.ext4")}, nil)
			ok := false
			if x.cancelledTool(err, i) {
				x.recordThrough()
			} else {
				ok = x.record(err)
			}
			x.a.pause(func() {
				st, serr := x.fstatIn("seed.ext4")
				if !ok {
					if serr == nil {
						x.t.Errorf("seed-work-disk failed (%v) and left seed.ext4 behind", err)
						unix.Unlinkat(x.dFd, "seed.ext4", 0)
					}
					return
				}
				if serr != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || int(st.Uid) != x.w.UID || st.Nlink != 1 {
					x.fatalf("seed-work-disk succeeded but seed.ext4 is %+v (%v)", st, serr)
				}
				fd, err := unix.Openat(x.dFd, "seed.ext4", unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
				must(x.t, err)
				f := os.NewFile(uintptr(fd), "seed.ext4")
				out, err := Run(ctx, "/usr/sbin/debugfs", "-R", "ls -p /", fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), fd))
				f.Close()
				if err != nil || !strings.Contains(string(out), "/.bashrc/") || strings.Contains(string(out), "SECRET") {
					x.fatalf("the seed is not the caller's image's /root: %q %v", out, err)
				}
				must(x.t, unix.Unlinkat(x.dFd, "seed.ext4", 0))
			})
		},
	}
}

// customizeOK reports whether image-customize got through every caller
// path: it succeeded, or failed only in the chroot script (a cancelled
// context, or the real script on a staging tree that is no Debian).
func customizeOK(err error) bool {
	return err == nil || strings.Contains(err.Error(), "customizing the image (images/debian/customize.sh)")
}

// advAgent is what the caller's agent binary holds.
const advAgent = "inside agent"

func customizeScenario() scenario {
	agent := advAgent
	return scenario{
		op: "image-customize", runs: advRuns, sudoRuns: advSudoTools,
		setup: func(x *advRun) []target {
			x.mkfile("agent", agent, 0, 0o755)
			for _, d := range []string{"modules", "modules/6.1.0", "modules/6.1.0/kernel"} {
				x.mkdir(d)
			}
			x.mkfile("modules/6.1.0/kernel/a.ko", "inside a.ko", 0, 0o644)
			must(x.t, unix.Symlinkat("/etc", x.dFd, "modules/6.1.0/build")) // skipped, never followed
			for rel, to := range map[string]string{"modules.sym": "modules", "modules/6.1.0/kernel.sym": "modules/6.1.0/kernel"} {
				must(x.t, unix.Symlinkat(filepath.Join(x.w.Outside, "d", to), x.dFd, rel))
				x.chown(x.dFd, rel)
			}
			return []target{
				{name: "agent", decoys: x.decoys("agent")},
				{name: "modules", decoys: []string{"sym"}},
				{dir: "modules/6.1.0", name: "kernel", decoys: []string{"sym"}},
				// a.ko's decoys live in d: a hard link inside the tree would
				// (rightly) refuse every copy of it.
				{dir: "modules/6.1.0/kernel", decoyDir: ".", name: "a.ko", decoys: x.decoysTo("a.ko", "modules/6.1.0/kernel/a.ko")},
			}
		},
		run: func(ctx context.Context, x *advRun, i int) {
			args := CustomizeArgs{Staging: x.w.Staging, AgentPath: x.path("agent"), AuthorizedKey: x.w.Key, ModulesDir: x.path("modules")}
			err := x.call(x.toolCtx(ctx, i), "image-customize", args, nil)
			switch {
			case x.cancelledTool(err, i):
				x.recordThrough()
			case customizeOK(err):
				x.record(nil)
			default:
				x.record(err)
				return
			}
			if x.root {
				checkStaged(x, agent) // the staging is root's: the sudo test checks it at the end
			}
		},
	}
}

// checkStaged checks the staging tree holds the caller's agent and only
// the caller's module contents (the swaps may have renamed the caller's
// files, which then are copied under their new names).
func checkStaged(x *advRun, agent string) {
	if bad := stagedFromOutside(x.w.Staging, agent); bad != "" {
		x.fatalf("%s", bad)
	}
}

// stagedFromOutside returns what in the staging tree is not the caller's:
// an agent other than theirs, a module file with other contents, or a
// symlink copied from the modules tree.
func stagedFromOutside(staging, agent string) string {
	tree := filepath.Join(staging, "root")
	if b, err := os.ReadFile(filepath.Join(tree, "tmp", "banger-build", "banger-agent")); err != nil || string(b) != agent {
		return fmt.Sprintf("staged agent = %q (%v), want the caller's %q", b, err, agent)
	}
	bad := ""
	filepath.Walk(filepath.Join(tree, "lib", "modules"), func(p string, fi os.FileInfo, err error) error {
		switch {
		case err != nil:
			bad = err.Error()
		case fi.Mode()&os.ModeSymlink != 0:
			bad = "staged a symlink from the modules tree: " + p
		case fi.Mode().IsRegular():
			if b, _ := os.ReadFile(p); string(b) != "inside a.ko" {
				bad = fmt.Sprintf("staged %s = %q, not the caller's module", p, b)
			}
		}
		return nil
	})
	return bad
}

func mkfsScenario() scenario {
	return scenario{
		op: "image-mkfs", runs: advRuns, sudoRuns: advSudoTools,
		setup: func(x *advRun) []target {
			x.mkfile("rootfs.img", "", 0, 0o600)
			return []target{{name: "rootfs.img", decoys: x.decoys("rootfs.img")}}
		},
		run: func(ctx context.Context, x *advRun, i int) {
			args := MkfsArgs{Staging: x.w.Staging, Out: x.path("rootfs.img"), SizeBytes: 512 << 20, Label: "rootfs"}
			err := x.call(x.toolCtx(ctx, i), "image-mkfs", args, nil)
			if x.cancelledTool(err, i) {
				x.recordThrough()
				return
			}
			if !x.record(err) {
				return
			}
			x.a.pause(func() {
				fd, err := unix.Openat(x.dFd, "rootfs.img", unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
				must(x.t, err)
				f := os.NewFile(uintptr(fd), "rootfs.img")
				defer f.Close()
				if n, _ := f.Seek(0, io.SeekEnd); n != 512<<20 {
					x.fatalf("image-mkfs succeeded but the caller's rootfs.img holds %d bytes", n)
				}
				if _, err := Ext4Bytes(f); err != nil {
					x.fatalf("image-mkfs succeeded but rootfs.img is not ext4: %v", err)
				}
			})
		},
	}
}
