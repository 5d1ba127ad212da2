package hostops

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// staticCase is one bad path handed to one op, no race needed.
type staticCase struct {
	name string
	op   string
	args any
}

// staticCases are the attacks that need no race: ".." and absolute paths
// out of the roots, a symlink, hard links to outside files (root's and the
// caller's own), a FIFO and a device node where a file is consumed, a file
// of another owner, and the state root itself a symlink to a root-owned
// directory. dir is the caller's directory holding the decoys.
func staticCases(w *advWorld, dir string, root bool) []staticCase {
	in := func(n string) string { return filepath.Join(dir, n) }
	bad := map[string]string{
		"dotdot":           in("../../../../../outside/d/secret"),
		"absolute outside": w.Secret,
		"symlink":          in("f.sym"),
		"symlinked parent": filepath.Join(w.State, "d.alt", "disk.img"),
		"hard link (own)":  in("f.hardown"),
		"fifo":             in("f.fifo"),
	}
	if root {
		bad["device node"] = in("f.dev")
		bad["another owner"] = in("rootowned")
		bad["hard link (root)"] = in("f.hard")
	} else if !w.Protected {
		bad["hard link (root)"] = in("f.hard")
	}
	var out []staticCase
	for why, p := range bad {
		out = append(out,
			staticCase{why, "loop-attach", LoopAttachArgs{Path: p}},
			staticCase{why, "loop-detach", LoopDetachArgs{Device: w.Victims["secret"], Backing: p}},
			staticCase{why, "seed-work-disk", SeedArgs{Image: p, Out: in("seed-" + randHex(4))}},
			staticCase{why, "image-mkfs", MkfsArgs{Staging: w.Staging, Out: p, SizeBytes: 512 << 20, Label: "rootfs"}},
			staticCase{why, "image-customize", CustomizeArgs{Staging: w.Staging, AgentPath: p, AuthorizedKey: w.Key}},
			staticCase{why, "image-customize", CustomizeArgs{Staging: w.Staging, AgentPath: in("agent"), AuthorizedKey: w.Key, ModulesDir: p}},
		)
	}
	for why, p := range map[string]string{"dotdot": in("../../../../../outside/d/vms/x"), "absolute outside": filepath.Join(w.Outside, "d", "vms", "x"),
		"symlinked parent": filepath.Join(w.State, "d.alt", "vms", "x"), "symlink": in("vms.sym/x")} {
		out = append(out,
			staticCase{why, "ensure-state-dirs", StateDirsArgs{Dirs: []string{p}}},
			staticCase{why, "seed-work-disk", SeedArgs{Image: in("img.ext4"), Out: p}})
	}
	return out
}

// runStatic makes the decoys in a fresh directory of the state root, runs
// every static case, then swaps the state root itself for a symlink to a
// root-owned directory and runs the ops on it once more: all must be
// refused and the outside must not change.
func runStatic(t *testing.T, w *advWorld, call opCaller, root bool, wt *watcher) {
	stateFd, err := unix.Open(filepath.Dir(w.State), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	must(t, err)
	defer unix.Close(stateFd)
	rootFd, err := unix.Openat(stateFd, "banger", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	must(t, err)
	defer unix.Close(rootFd)
	name := "static-" + randHex(4)
	must(t, unix.Mkdirat(rootFd, name, 0o755))
	dFd, err := unix.Openat(rootFd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	must(t, err)
	defer unix.Close(dFd)
	x := &advRun{t: t, w: w, root: root, dFd: dFd, rootFd: rootFd}
	if root {
		must(t, unix.Fchownat(rootFd, name, w.UID, w.GID, 0))
	}
	x.mkfile("f", "", 1<<20, 0o600)
	x.decoys("f")
	x.mkfile("agent", advAgent, 0, 0o755)
	b, err := os.ReadFile(w.SeedImage)
	must(t, err)
	x.mkfile("img.ext4", string(b), 0, 0o600)
	x.mkdir("vms")
	must(t, unix.Symlinkat(filepath.Join(w.Outside, "d", "vms"), dFd, "vms.sym"))
	if root {
		must(t, unix.Mknodat(dFd, "rootowned", unix.S_IFREG|0o600, 0))
	}
	dir := filepath.Join(w.State, name)
	before := w.snapshot()
	ctx := context.Background()
	shown := map[string]bool{}
	check := func(label string, cases []staticCase) {
		for _, c := range cases {
			done := make(chan error, 1)
			go func() { done <- call(ctx, c.op, c.args, nil) }()
			var err error
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				t.Fatalf("%s: %s with %s: no answer after 30s (blocked on a FIFO?)", label, c.op, c.name)
			}
			if !errors.Is(err, ErrRefused) {
				t.Errorf("%s: %s with %s: %v, want a refusal", label, c.op, c.name, err)
			} else if !shown[c.op+c.name] && (c.name == "hard link (own)" || c.name == "fifo" || label != "bad paths") {
				shown[c.op+c.name] = true
				t.Logf("  %s: %v", c.op, err)
			}
			if strings.Contains(fmt.Sprint(err), "\n") {
				t.Errorf("%s: %s with %s: the refusal spans lines: %q", label, c.op, c.name, err)
			}
		}
		d := before.diff()
		if wt != nil {
			d = append(d, wt.events()...)
		}
		if len(d) > 0 {
			t.Fatalf("%s touched the outside:\n  %s", label, strings.Join(d, "\n  "))
		}
	}
	cases := staticCases(w, dir, root)
	check("bad paths", cases)
	// The no-race attack: the state root a symlink to a root-owned
	// directory (the outside mirror holds the same names).
	must(t, unix.Renameat2(stateFd, "banger", stateFd, "banger.alt", unix.RENAME_EXCHANGE))
	defer unix.Renameat2(stateFd, "banger", stateFd, "banger.alt", unix.RENAME_EXCHANGE)
	viaLink := []staticCase{
		{"root a symlink", "ensure-state-dirs", StateDirsArgs{Dirs: []string{filepath.Join(w.State, "d", "vms")}}},
		{"root a symlink", "loop-attach", LoopAttachArgs{Path: filepath.Join(w.State, "d", "disk.img")}},
		{"root a symlink", "seed-work-disk", SeedArgs{Image: filepath.Join(w.State, "d", "img.ext4"), Out: filepath.Join(w.State, "d", "seed")}},
		{"root a symlink", "image-mkfs", MkfsArgs{Staging: w.Staging, Out: filepath.Join(w.State, "d", "rootfs.img"), SizeBytes: 512 << 20, Label: "rootfs"}},
		{"root a symlink", "image-customize", CustomizeArgs{Staging: w.Staging, AgentPath: filepath.Join(w.State, "d", "agent"), AuthorizedKey: w.Key}},
		{"root a symlink", "loop-detach", LoopDetachArgs{Device: w.Victims["secret"], Backing: filepath.Join(w.State, "d", "disk.img")}},
	}
	check("state root a symlink", viaLink)
	t.Logf("static attacks (%s): %d bad paths and %d ops through a symlinked root, all refused", map[bool]string{true: "in-process", false: "sudo"}[root], len(cases), len(viaLink))
}
