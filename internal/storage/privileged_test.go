package storage

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"banger/internal/capability"
	"banger/internal/hostops"
)

// Privileged tests: root, real loop devices and ext4 (e2fsprogs). They
// work inside t.TempDir() roots and clean up mounts and loops they make.

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: real loop devices, ext4 ownership and mounts")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skip("needs loop devices: /dev/loop-control missing")
	}
	needE2fsprogs(t)
}

func needE2fsprogs(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"mkfs.ext4", "debugfs", "e2fsck", "resize2fs"} {
		if _, err := hostops.Run(context.Background(), tool, "-V"); err != nil && strings.Contains(err.Error(), "executable file not found") {
			t.Skipf("needs %s (install e2fsprogs)", tool)
		}
	}
}

// node describes one entry of a test tree.
type node struct {
	mode     os.FileMode // permission bits; os.ModeDir / os.ModeSymlink for kind
	uid, gid int
	body     string // file content or symlink target
}

// makeTree creates entries (applied in sorted path order) under dir.
func makeTree(t *testing.T, dir string, entries map[string]node) {
	t.Helper()
	paths := make([]string, 0, len(entries))
	for p := range entries {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		n := entries[p]
		full := filepath.Join(dir, p)
		var err error
		switch {
		case n.mode&os.ModeDir != 0:
			err = os.MkdirAll(full, 0o755)
		case n.mode&os.ModeSymlink != 0:
			err = os.Symlink(n.body, full)
		default:
			err = os.WriteFile(full, []byte(n.body), 0o600)
		}
		if err == nil {
			err = os.Lchown(full, n.uid, n.gid)
		}
		if err == nil && n.mode&os.ModeSymlink == 0 {
			err = os.Chmod(full, n.mode&(os.ModePerm|os.ModeSetgid|os.ModeSetuid|os.ModeSticky))
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func mkfs(t *testing.T, tree, out, size string) {
	t.Helper()
	if _, err := hostops.Run(context.Background(), "mkfs.ext4", "-q", "-F", "-d", tree, out, size); err != nil {
		t.Fatal(err)
	}
}

// dentry is one line of `debugfs -R 'ls -p DIR'`.
type dentry struct{ mode, uid, gid string }

func debugfsLs(t *testing.T, img, dir string) map[string]dentry {
	t.Helper()
	out, err := hostops.Run(context.Background(), "debugfs", "-R", "ls -p "+dir, img)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]dentry{}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Split(strings.TrimSpace(line), "/")
		if len(f) >= 7 {
			m[f[5]] = dentry{f[2], f[3], f[4]}
		}
	}
	return m
}

func debugfs(t *testing.T, img, cmd string) string {
	t.Helper()
	out, err := hostops.Run(context.Background(), "debugfs", "-R", cmd, img)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func fsBytes(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n, err := hostops.Ext4Bytes(f)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func fsckClean(t *testing.T, path string) {
	t.Helper()
	if out, err := hostops.Run(context.Background(), "e2fsck", "-f", "-n", path); err != nil {
		t.Errorf("e2fsck -fn %s: %v\n%s", path, err, out)
	}
}

// countingHost counts privileged seeds on a real client.
type countingHost struct {
	*hostops.Client
	mu    sync.Mutex
	seeds int
}

func (c *countingHost) SeedWorkDisk(ctx context.Context, image, out string) error {
	c.mu.Lock()
	c.seeds++
	c.mu.Unlock()
	return c.Client.SeedWorkDisk(ctx, image, out)
}

// env is a state dir acting as the caller's only root, with a manager.
type env struct {
	root string
	host *countingHost
	m    *Manager
	rec  *recorder
}

func newEnv(t *testing.T, driver string) *env {
	t.Helper()
	root := t.TempDir()
	host := &countingHost{Client: hostops.New(hostops.Options{Roots: []string{root}})}
	rec := &recorder{}
	m, err := New(Options{Driver: driver, Host: host, Record: rec.record, SeedDir: filepath.Join(root, "seeds")})
	if err != nil {
		t.Fatal(err)
	}
	return &env{root: root, host: host, m: m, rec: rec}
}

// image builds a 32 MiB ext4 image from entries under the env's root.
func (e *env) image(t *testing.T, entries map[string]node) string {
	t.Helper()
	tree := filepath.Join(e.root, "tree-"+randHex(t))
	if err := os.Mkdir(tree, 0o755); err != nil {
		t.Fatal(err)
	}
	makeTree(t, tree, entries)
	img := filepath.Join(e.root, "image-"+randHex(t)+".ext4")
	mkfs(t, tree, img, "32M")
	return img
}

func (e *env) vmDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp(e.root, "vm-")
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func randHex(t *testing.T) string {
	b := make([]byte, 5)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

var homeTree = map[string]node{
	"etc":                          {mode: os.ModeDir | 0o755},
	"etc/hostname":                 {mode: 0o644, body: "banger-test\n"},
	"root":                         {mode: os.ModeDir | 0o700},
	"root/.bashrc":                 {mode: 0o644, body: "export PS1='vm# '\n"},
	"root/.ssh":                    {mode: os.ModeDir | 0o700},
	"root/.ssh/authorized_keys":    {mode: 0o600, body: "ssh-ed25519 AAAA test\n"},
	"root/userfile":                {mode: 0o640, uid: 1000, gid: 1001, body: "theirs\n"},
	"root/link":                    {mode: os.ModeSymlink, body: "/etc/passwd"},
	"root/tool":                    {mode: os.ModeSetuid | 0o755, body: "#!/bin/true\n"},
	"root/project":                 {mode: os.ModeDir | os.ModeSetgid | 0o775, uid: 1000, gid: 1000},
	"root/project/run.sh":          {mode: 0o755, uid: 1000, gid: 1000, body: "#!/bin/sh\n"},
	"root/project/.hidden-symlink": {mode: os.ModeSymlink, uid: 1000, gid: 1000, body: "run.sh"},
}

func TestCopyDriverEndToEnd(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	e := newEnv(t, DriverCopy)
	img := e.image(t, homeTree)
	d := Disk{VMID: "c0ffee0001", VMDir: e.vmDir(t), ImagePath: img, DiskBytes: 64 << 20}
	st, _, err := e.m.CreateRoot(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(d.VMDir, "rootfs.ext4")
	if st.Phase != PhaseDown || st.RootDisk != root || st.Driver != DriverCopy {
		t.Fatalf("state %+v", st)
	}
	fi, err := os.Stat(root)
	if err != nil || fi.Size() != 64<<20 || fsBytes(t, root) != 64<<20 {
		t.Fatalf("root disk %v, size %d, want a 64 MiB file and filesystem", err, fi.Size())
	}
	if blocks := fi.Sys().(*syscall.Stat_t).Blocks * 512; blocks > 16<<20 {
		t.Errorf("root disk allocates %d bytes: the copy is not sparse", blocks)
	}
	fsckClean(t, root)
	if got := debugfs(t, root, "cat /etc/hostname"); got != "banger-test\n" {
		t.Errorf("/etc/hostname = %q", got)
	}
	d.State = st
	if _, _, err := e.m.CreateRoot(ctx, d); err == nil {
		t.Error("second CreateRoot accepted")
	}
	if st, err = e.m.Activate(ctx, d); err != nil || st.Phase != PhaseReady || st.RootDisk != root {
		t.Fatalf("Activate: %+v %v", st, err)
	}
	d.State = st
	if err := e.m.Remove(ctx, d); err == nil {
		t.Error("Remove of an active disk accepted")
	}
	if st, err = e.m.Deactivate(ctx, d); err != nil || st.Phase != PhaseDown {
		t.Fatalf("Deactivate: %+v %v", st, err)
	}
	d.State = st
	if err := e.m.Remove(ctx, d); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(d.VMDir); len(ents) != 0 {
		t.Errorf("left after Remove: %v", ents)
	}
	if got := e.rec.last(); got.Phase != PhaseDown {
		t.Errorf("last recorded %+v", got)
	}
}

// tinyFS mounts a small tmpfs on a fresh directory under dir.
func tinyFS(t *testing.T, dir, size string) string {
	t.Helper()
	mnt, err := os.MkdirTemp(dir, "tiny-")
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", mnt, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size="+size+",mode=0700"); err != nil {
		t.Skipf("cannot mount a tmpfs to fill: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(mnt, unix.MNT_DETACH) })
	return mnt
}

func TestFullFilesystem(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	e := newEnv(t, DriverCopy)
	noise := make([]byte, 3<<20)
	if _, err := rand.Read(noise); err != nil {
		t.Fatal(err)
	}
	tree := maps(homeTree, map[string]node{
		"var":            {mode: os.ModeDir | 0o755},
		"var/noise":      {mode: 0o644, body: string(noise)},
		"root/big.noise": {mode: 0o600, body: string(noise)},
	})
	img := e.image(t, tree)
	full := tinyFS(t, e.root, "1m")

	d := Disk{VMID: "f011000001", VMDir: full, ImagePath: img, DiskBytes: 64 << 20}
	_, _, err := e.m.CreateRoot(ctx, d)
	if err == nil || !errors.Is(err, unix.ENOSPC) || !strings.Contains(err.Error(), filepath.Join(full, "rootfs.ext4")) {
		t.Errorf("CreateRoot on a full filesystem: %v; want ENOSPC naming the path", err)
	}
	out := filepath.Join(full, "work.ext4")
	err = e.m.CreateWorkDisk(ctx, "img1", img, out, 64<<20)
	if err == nil || !errors.Is(err, unix.ENOSPC) || !strings.Contains(err.Error(), out) {
		t.Errorf("CreateWorkDisk on a full filesystem: %v; want ENOSPC naming %s", err, out)
	}
	if ents, _ := os.ReadDir(full); len(ents) != 0 {
		t.Errorf("half-made files left: %v", ents)
	}
	if got := e.rec.last(); got.Phase != "" {
		t.Errorf("recorded %+v after a failed create", got)
	}
}

func maps(a, b map[string]node) map[string]node {
	out := map[string]node{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

func TestWorkDiskSeedPrivileged(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	e := newEnv(t, DriverCopy)
	img := e.image(t, homeTree)
	dir := e.vmDir(t)
	out := filepath.Join(dir, "work.ext4")
	if err := e.m.CreateWorkDisk(ctx, "img1", img, out, 16<<30); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(out)
	if err != nil || fi.Size() != 16<<30 || fsBytes(t, out) != 16<<30 {
		t.Fatalf("work disk %v size %d, want a 16 GiB file and filesystem", err, fi.Size())
	}
	if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != os.Getuid() || fi.Mode().Perm() != 0o600 {
		t.Errorf("work disk owned %d mode %v, want the caller's with 0600", st.Uid, fi.Mode().Perm())
	}
	fsckClean(t, out)
	want := map[string]dentry{
		".":          {"040700", "0", "0"},
		".bashrc":    {"100644", "0", "0"},
		".ssh":       {"040700", "0", "0"},
		"userfile":   {"100640", "1000", "1001"},
		"link":       {"120777", "0", "0"},
		"tool":       {"104755", "0", "0"},
		"project":    {"042775", "1000", "1000"},
		"lost+found": {"040700", "0", "0"},
		"..":         {"040700", "0", "0"},
	}
	if got := debugfsLs(t, out, "/"); !mapsEqual(got, want) {
		t.Errorf("work disk / = %v\nwant %v", got, want)
	}
	if got := debugfsLs(t, out, "/.ssh"); got["authorized_keys"] != (dentry{"100600", "0", "0"}) {
		t.Errorf("/.ssh = %v", got)
	}
	if got := debugfsLs(t, out, "/project"); got["run.sh"] != (dentry{"100755", "1000", "1000"}) || got[".hidden-symlink"].mode != "120777" {
		t.Errorf("/project = %v", got)
	}
	if s := debugfs(t, out, "stat /link"); !strings.Contains(s, `Fast link dest: "/etc/passwd"`) {
		t.Errorf("/link is not the symlink to /etc/passwd:\n%s", s)
	}
	if got := debugfs(t, out, "cat /.ssh/authorized_keys"); got != "ssh-ed25519 AAAA test\n" {
		t.Errorf("authorized_keys = %q", got)
	}

	// A second VM reuses the cached seed.
	out2 := filepath.Join(e.vmDir(t), "work.ext4")
	if err := e.m.CreateWorkDisk(ctx, "img1", img, out2, 1<<30); err != nil {
		t.Fatal(err)
	}
	if e.host.seeds != 1 {
		t.Errorf("seeded %d times for two work disks of one image", e.host.seeds)
	}
	if fsBytes(t, out2) != 1<<30 {
		t.Errorf("second work disk holds %d bytes", fsBytes(t, out2))
	}

	for _, tt := range []struct {
		name, out string
		size      int64
		want      string
	}{
		{"existing disk", out, 16 << 30, "already exists"},
		{"smaller than the seed", filepath.Join(dir, "small.ext4"), 1 << 20, "smaller than the /root seed"},
		{"bad size", filepath.Join(dir, "odd.ext4"), 1<<30 + 1, "multiple of 4096"},
	} {
		if err := e.m.CreateWorkDisk(ctx, "img1", img, tt.out, tt.size); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "small.ext4")); !errors.Is(err, os.ErrNotExist) {
		t.Error("refused work disk left a file")
	}

	// A work disk grows; it never shrinks.
	if err := e.m.GrowWorkDisk(ctx, out2, 2<<30); err != nil {
		t.Fatal(err)
	}
	if fsBytes(t, out2) != 2<<30 {
		t.Errorf("grown work disk holds %d bytes", fsBytes(t, out2))
	}
	fsckClean(t, out2)
	if got := debugfs(t, out2, "cat /.bashrc"); got != "export PS1='vm# '\n" {
		t.Errorf("content after grow: %q", got)
	}
	if err := e.m.GrowWorkDisk(ctx, out2, 1<<30); err == nil || !strings.Contains(err.Error(), "shrinking") {
		t.Errorf("shrink: %v", err)
	}
	if fsBytes(t, out2) != 2<<30 {
		t.Error("refused shrink changed the disk")
	}
}

func mapsEqual(a, b map[string]dentry) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestRepairNestedRootPrivileged: a work disk with the home one level too
// deep (root-owned and foreign-owned entries, a name clash, a symlink
// pointing out) is flattened in userspace: no mount, no loop device.
func TestRepairNestedRootPrivileged(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	e := newEnv(t, DriverCopy)
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "sentinel"), []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	tree := filepath.Join(e.root, "tree")
	makeTree(t, tree, map[string]node{
		".bashrc":                   {mode: 0o644, uid: 1000, gid: 1000, body: "top\n"},
		"root":                      {mode: os.ModeDir | 0o700},
		"root/.bashrc":              {mode: 0o644, body: "nested\n"},
		"root/.profile":             {mode: 0o600, body: "profile\n"},
		"root/.ssh":                 {mode: os.ModeDir | 0o700},
		"root/.ssh/authorized_keys": {mode: 0o600, body: "key\n"},
		"root/theirs":               {mode: 0o640, uid: 1000, gid: 1001, body: "x\n"},
		"root/tool":                 {mode: os.ModeSetuid | 0o755, body: "#!/bin/true\n"},
		"root/escape":               {mode: os.ModeSymlink, body: outside},
	})
	if err := os.Chmod(tree, 0o755); err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(e.vmDir(t), "work.ext4")
	mkfs(t, tree, disk, "16M")
	mountsBefore, _ := os.ReadFile("/proc/self/mountinfo")

	moves, err := e.m.RepairNestedRoot(ctx, disk)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"root/.bashrc -> .bashrc.nested",
		"root/.profile -> .profile",
		"root/.ssh -> .ssh",
		"root/escape -> escape",
		"root/theirs -> theirs",
		"root/tool -> tool",
		"removed empty root/ (owner 0:0, mode 0700 kept on the disk's root)",
	}
	if !slices.Equal(moves, want) {
		t.Errorf("moves:\n%s\nwant:\n%s", strings.Join(moves, "\n"), strings.Join(want, "\n"))
	}
	got := debugfsLs(t, disk, "/")
	for name, w := range map[string]dentry{
		".":              {"040700", "0", "0"},
		".bashrc":        {"100644", "1000", "1000"},
		".bashrc.nested": {"100644", "0", "0"},
		".profile":       {"100600", "0", "0"},
		".ssh":           {"040700", "0", "0"},
		"theirs":         {"100640", "1000", "1001"},
		"tool":           {"104755", "0", "0"},
		"escape":         {"120777", "0", "0"},
	} {
		if got[name] != w {
			t.Errorf("/%s = %+v, want %+v", name, got[name], w)
		}
	}
	if _, ok := got["root"]; ok {
		t.Error("nested root/ still there")
	}
	if c := debugfs(t, disk, "cat /.bashrc"); c != "top\n" {
		t.Errorf("top-level .bashrc replaced: %q", c)
	}
	if s := debugfs(t, disk, "stat /escape"); !strings.Contains(s, outside) {
		t.Errorf("escape is no longer the symlink to %s:\n%s", outside, s)
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 1 {
		t.Errorf("the symlink was followed: %s now holds %v", outside, ents)
	}
	fsckClean(t, disk)
	if fi, err := os.Stat(disk); err != nil || int(fi.Sys().(*syscall.Stat_t).Uid) != os.Getuid() {
		t.Errorf("work disk owner changed: %v", err)
	}
	if devs, _ := e.host.LoopsBackedBy(ctx, disk); len(devs) != 0 {
		t.Errorf("loop devices on the work disk: %v", devs)
	}
	if mi, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mi), filepath.Dir(disk)) || (strings.Count(string(mi), "banger-repair-") > strings.Count(string(mountsBefore), "banger-repair-")) {
		t.Error("the repair mounted something")
	}

	// A repaired disk is left alone, unwritten.
	before := fileSum(t, disk)
	for i := 0; i < 2; i++ {
		if moves, err := e.m.RepairNestedRoot(ctx, disk); err != nil || len(moves) != 0 {
			t.Errorf("repeat repair: %v %v", moves, err)
		}
	}
	if fileSum(t, disk) != before {
		t.Error("a flat disk was written")
	}
}

// TestRepairErrorLeavesDiskAlone: a repair that cannot be done (the top
// directory is immutable) fails with the disk unchanged.
func TestRepairErrorLeavesDiskAlone(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	e := newEnv(t, DriverCopy)
	tree := filepath.Join(e.root, "tree")
	makeTree(t, tree, map[string]node{
		".bashrc":      {mode: 0o644, body: "top\n"},
		"root":         {mode: os.ModeDir | 0o700},
		"root/.bashrc": {mode: 0o644, body: "nested\n"},
	})
	disk := filepath.Join(e.vmDir(t), "work.ext4")
	mkfs(t, tree, disk, "16M")
	// Immutable, keeping the extents flag the directory has.
	if _, err := hostops.Run(ctx, "debugfs", "-w", "-R", "sif / flags 0x80010", disk); err != nil {
		t.Fatal(err)
	}
	before := fileSum(t, disk)
	if _, err := e.m.RepairNestedRoot(ctx, disk); err == nil || !strings.Contains(err.Error(), "immutable") || !strings.Contains(err.Error(), disk) {
		t.Fatalf("repair on an immutable directory: %v", err)
	}
	if fileSum(t, disk) != before {
		t.Error("failed repair changed the disk")
	}
}

func fileSum(t *testing.T, p string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func TestDMPrivileged(t *testing.T) {
	if _, err := capability.DeviceMapper(); err != nil {
		t.Skipf("no device-mapper on this host: %v", err)
	}
	needRoot(t)
	// The node can exist while the kernel has no device-mapper driver (a
	// container or microVM kernel built without it): opening it says so.
	if f, err := os.OpenFile("/dev/mapper/control", os.O_RDWR, 0); errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO) {
		t.Skipf("no device-mapper driver in this kernel: opening /dev/mapper/control: %v", err)
	} else if err == nil {
		f.Close()
	}
	ctx := context.Background()
	e := newEnv(t, DriverDM)
	img := e.image(t, homeTree)
	d := Disk{VMID: randHex(t), VMDir: e.vmDir(t), ImagePath: img, DiskBytes: 64 << 20}
	st, _, err := e.m.CreateRoot(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	d.State = st
	t.Cleanup(func() {
		if st := e.rec.last(); len(st.Handles) > 0 {
			d.State = st
			_, _ = e.m.Deactivate(context.Background(), d)
		}
	})
	for round := 0; round < 2; round++ {
		st, err = e.m.Activate(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		d.State = st
		if fsBytes(t, st.RootDisk) != 64<<20 {
			t.Errorf("snapshot filesystem holds %d bytes, want 64 MiB", fsBytes(t, st.RootDisk))
		}
		if got := debugfs(t, st.RootDisk, "cat /etc/hostname"); got != "banger-test\n" {
			t.Errorf("/etc/hostname through the snapshot = %q", got)
		}
		st, err = e.m.Deactivate(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		d.State = st
		if st.Phase != PhaseDown || len(st.Handles) != 0 {
			t.Fatalf("after Deactivate: %+v", st)
		}
		for _, p := range []string{img, st.COWPath} {
			if devs, _ := e.host.LoopsBackedBy(ctx, p); len(devs) != 0 {
				t.Errorf("loops left on %s: %v", p, devs)
			}
		}
		if ok, _ := e.host.DMExists(ctx, snapName(d.VMID)); ok {
			t.Error("snapshot left")
		}
	}
	if fsBytes(t, img) != 32<<20 {
		t.Error("the shared image was modified")
	}
	if err := e.m.Remove(ctx, d); err != nil {
		t.Fatal(err)
	}
}
