package hostops

// Storage operations: loop devices, device-mapper snapshots and work-disk
// seeding run privileged; filesystem growth and the sysfs look-ups run as
// the calling process.
//
// Every file an op opens as root is opened once with O_NOFOLLOW, checked
// with fstat, and handed on by descriptor (a loop device configured from
// the descriptor, or /proc/<pid>/fd/<n> for a child tool), so a user who
// swaps a path for a symlink after validation cannot redirect root.
// Scratch space (rdump staging, mount points) is a root-owned 0700
// directory under os.TempDir, never a directory the user can rename.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"golang.org/x/sys/unix"
)

const (
	loFlagsReadOnly  = 1
	loFlagsAutoclear = 4
	sysRoot          = "/sys"
)

var (
	loopDevRe = regexp.MustCompile(`^/dev/loop[0-9]+$`)
	// A counted repetition like {0,100} compiles into 100 copies and cost
	// every banger process milliseconds at start; the length is checked apart.
	dmNameRe = regexp.MustCompile(`^banger-[a-z0-9][a-z0-9-]*$`)
)

// BusyError reports a device that is still open; Holders names who holds
// it when that can be found ("pid 42 (firecracker)", "dm banger-x").
type BusyError struct {
	Device  string
	Holders []string
}

func (e *BusyError) Error() string {
	if len(e.Holders) == 0 {
		return fmt.Sprintf("device %s is busy (holder not found)", e.Device)
	}
	return fmt.Sprintf("device %s is busy, held by %s", e.Device, strings.Join(e.Holders, ", "))
}

// Argument and result types of the storage ops.
type (
	LoopAttachArgs struct {
		Path     string `json:"path"`
		ReadOnly bool   `json:"read_only"`
	}
	LoopAttachResult struct {
		Device string `json:"device"`
	}
	LoopDetachArgs struct {
		Device  string `json:"device"`
		Backing string `json:"backing"`
	}
	DMOriginArgs struct {
		Name         string `json:"name"`
		ImageLoop    string `json:"image_loop"`
		ImageBacking string `json:"image_backing"`
		SizeBytes    int64  `json:"size_bytes"`
	}
	DMSnapshotArgs struct {
		Name       string `json:"name"`
		Origin     string `json:"origin"`
		COWLoop    string `json:"cow_loop"`
		COWBacking string `json:"cow_backing"`
	}
	DMNameArgs struct {
		Name string `json:"name"`
	}
	DMRemoveResult struct {
		Removed bool     `json:"removed"`
		Busy    bool     `json:"busy"`
		Holders []string `json:"holders,omitempty"`
	}
	DMChownResult struct {
		Node string `json:"node"`
	}
	SeedArgs struct {
		Image string `json:"image"`
		Out   string `json:"out"`
	}
)

// addStorageOps registers the storage operations (loop, device-mapper,
// work-disk seeding).
func addStorageOps(m map[string]opFunc) {
	m["loop-attach"] = opLoopAttach
	m["loop-detach"] = opLoopDetach
	m["dm-create-origin"] = opDMCreateOrigin
	m["dm-create-snapshot"] = opDMCreateSnapshot
	m["dm-remove"] = opDMRemove
	m["dm-chown"] = opDMChown
	m["seed-work-disk"] = opSeedWorkDisk
}

// LoopAttach attaches the file at path (under the caller's roots) to a free
// loop device and returns it ("/dev/loopN"). Autoclear is set later, when a
// device-mapper table takes the loop over.
func (c *Client) LoopAttach(ctx context.Context, path string, readOnly bool) (string, error) {
	var r LoopAttachResult
	if err := c.call(ctx, "loop-attach", LoopAttachArgs{Path: path, ReadOnly: readOnly}, &r); err != nil {
		return "", err
	}
	return r.Device, nil
}

// LoopDetach detaches dev only if it is backed by backing; a device that is
// no longer attached is fine, one backed by another file is refused.
func (c *Client) LoopDetach(ctx context.Context, dev, backing string) error {
	return c.call(ctx, "loop-detach", LoopDetachArgs{Device: dev, Backing: backing}, nil)
}

// DMCreateOrigin creates the read-only origin device name: a linear target
// over the image loop followed by a zero target up to sizeBytes.
func (c *Client) DMCreateOrigin(ctx context.Context, name, imageLoop, imageBacking string, sizeBytes int64) error {
	return c.call(ctx, "dm-create-origin", DMOriginArgs{Name: name, ImageLoop: imageLoop, ImageBacking: imageBacking, SizeBytes: sizeBytes}, nil)
}

// DMCreateSnapshot creates the persistent snapshot name over origin with
// its exceptions stored on the COW loop.
func (c *Client) DMCreateSnapshot(ctx context.Context, name, origin, cowLoop, cowBacking string) error {
	return c.call(ctx, "dm-create-snapshot", DMSnapshotArgs{Name: name, Origin: origin, COWLoop: cowLoop, COWBacking: cowBacking}, nil)
}

// DMRemove removes the device-mapper device name. A missing device is not
// an error; an open one gives a *BusyError.
func (c *Client) DMRemove(ctx context.Context, name string) error {
	var r DMRemoveResult
	if err := c.call(ctx, "dm-remove", DMNameArgs{Name: name}, &r); err != nil {
		return err
	}
	if r.Busy {
		return &BusyError{Device: name, Holders: r.Holders}
	}
	return nil
}

// DMChown hands /dev/mapper/name to the caller and returns that path.
func (c *Client) DMChown(ctx context.Context, name string) (string, error) {
	var r DMChownResult
	if err := c.call(ctx, "dm-chown", DMNameArgs{Name: name}, &r); err != nil {
		return "", err
	}
	return r.Node, nil
}

// SeedWorkDisk builds out, a small ext4 holding the image's /root with its
// owners, modes and symlinks, owned by the caller.
func (c *Client) SeedWorkDisk(ctx context.Context, image, out string) error {
	return c.call(ctx, "seed-work-disk", SeedArgs{Image: image, Out: out}, nil)
}

// LoopBacking returns the file behind dev, or "" when dev is not attached.
// Unprivileged (sysfs).
func (c *Client) LoopBacking(ctx context.Context, dev string) (string, error) {
	return loopBacking(sysRoot, dev)
}

// LoopsBackedBy lists the loop devices backed by path that no other device
// holds (a held loop belongs to a live device-mapper table). Unprivileged.
func (c *Client) LoopsBackedBy(ctx context.Context, path string) ([]string, error) {
	return loopsBackedBy(sysRoot, path, true)
}

// DMExists reports whether the device-mapper device name exists. Unprivileged.
func (c *Client) DMExists(ctx context.Context, name string) (bool, error) {
	n, err := dmNode(sysRoot, name)
	return n != "", err
}

// GrowFS grows the ext4 filesystem at path (file or block device the
// current process can open) to fill it, with e2fsck -f first; it does
// nothing when the filesystem already fills it. Runs as the current process.
func (c *Client) GrowFS(ctx context.Context, path string) (bool, error) {
	return GrowFS(ctx, path)
}

func opLoopAttach(ctx context.Context, c Caller, raw json.RawMessage) (any, error) {
	var a LoopAttachArgs
	if err := decode("loop-attach", raw, &a); err != nil {
		return nil, err
	}
	f, err := openOwned(c, a.Path, !a.ReadOnly)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	dev, lf, err := attachLoop(f, a.ReadOnly, false)
	if err != nil {
		return nil, fmt.Errorf("attaching %s to a loop device: %w", a.Path, err)
	}
	lf.Close()
	return LoopAttachResult{Device: dev}, nil
}

func opLoopDetach(ctx context.Context, c Caller, raw json.RawMessage) (any, error) {
	var a LoopDetachArgs
	if err := decode("loop-detach", raw, &a); err != nil {
		return nil, err
	}
	if !loopDevRe.MatchString(a.Device) {
		return nil, fmt.Errorf("%w: %q is not a loop device", ErrRefused, a.Device)
	}
	want, err := c.CheckPath(a.Backing)
	if err != nil {
		return nil, err
	}
	cur, err := loopBacking(sysRoot, a.Device)
	if err != nil || cur == "" {
		return nil, err
	}
	if cur != want {
		return nil, fmt.Errorf("%w: loop device %s is backed by %s, not %s; leaving it alone", ErrRefused, a.Device, cur, want)
	}
	lf, err := os.OpenFile(a.Device, os.O_RDONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", a.Device, err)
	}
	defer lf.Close()
	// With another opener (a dm table) the kernel turns this into autoclear.
	if err := unix.IoctlSetInt(int(lf.Fd()), unix.LOOP_CLR_FD, 0); err != nil && !errors.Is(err, unix.ENXIO) {
		return nil, fmt.Errorf("detaching %s: %w", a.Device, err)
	}
	return nil, nil
}

func opDMCreateOrigin(ctx context.Context, c Caller, raw json.RawMessage) (any, error) {
	var a DMOriginArgs
	if err := decode("dm-create-origin", raw, &a); err != nil {
		return nil, err
	}
	if err := checkDMName(a.Name); err != nil {
		return nil, err
	}
	if err := checkLoopOwned(c, a.ImageLoop, a.ImageBacking); err != nil {
		return nil, err
	}
	imgSectors, err := readSysInt(filepath.Join(sysRoot, "block", filepath.Base(a.ImageLoop), "size"))
	if err != nil {
		return nil, fmt.Errorf("reading size of %s: %w", a.ImageLoop, err)
	}
	if a.SizeBytes <= 0 || a.SizeBytes%512 != 0 || a.SizeBytes/512 < imgSectors {
		return nil, fmt.Errorf("%w: origin size %d must be a positive multiple of 512 and at least the image's %d bytes", ErrRefused, a.SizeBytes, imgSectors*512)
	}
	table := fmt.Sprintf("0 %d linear %s 0\n", imgSectors, a.ImageLoop)
	if rest := a.SizeBytes/512 - imgSectors; rest > 0 {
		table += fmt.Sprintf("%d %d zero\n", imgSectors, rest)
	}
	if _, err := runInput(ctx, table, "dmsetup", "create", a.Name, "--readonly"); err != nil {
		return nil, fmt.Errorf("creating origin %s: %w", a.Name, err)
	}
	if err := setAutoclear(a.ImageLoop); err != nil {
		return nil, err
	}
	return nil, nil
}

func opDMCreateSnapshot(ctx context.Context, c Caller, raw json.RawMessage) (any, error) {
	var a DMSnapshotArgs
	if err := decode("dm-create-snapshot", raw, &a); err != nil {
		return nil, err
	}
	if err := checkDMName(a.Name); err != nil {
		return nil, err
	}
	if err := checkDMName(a.Origin); err != nil {
		return nil, err
	}
	if err := checkLoopOwned(c, a.COWLoop, a.COWBacking); err != nil {
		return nil, err
	}
	node, err := dmNode(sysRoot, a.Origin)
	if err != nil || node == "" {
		return nil, fmt.Errorf("origin %s not found: %v", a.Origin, err)
	}
	sectors, err := readSysInt(filepath.Join(sysRoot, "block", node, "size"))
	if err != nil {
		return nil, fmt.Errorf("reading size of %s: %w", a.Origin, err)
	}
	majmin, err := os.ReadFile(filepath.Join(sysRoot, "block", node, "dev"))
	if err != nil {
		return nil, fmt.Errorf("reading device number of %s: %w", a.Origin, err)
	}
	if _, err := os.Stat(filepath.Join(sysRoot, "module", "dm_snapshot")); err != nil {
		_, _ = Run(ctx, "modprobe", "dm-snapshot") // the create below reports a missing target
	}
	table := fmt.Sprintf("0 %d snapshot %s %s P 8\n", sectors, strings.TrimSpace(string(majmin)), a.COWLoop)
	if _, err := runInput(ctx, table, "dmsetup", "create", a.Name); err != nil {
		return nil, fmt.Errorf("creating snapshot %s: %w", a.Name, err)
	}
	if err := setAutoclear(a.COWLoop); err != nil {
		return nil, err
	}
	return nil, nil
}

func opDMRemove(ctx context.Context, c Caller, raw json.RawMessage) (any, error) {
	var a DMNameArgs
	if err := decode("dm-remove", raw, &a); err != nil {
		return nil, err
	}
	if err := checkDMName(a.Name); err != nil {
		return nil, err
	}
	node, err := dmNode(sysRoot, a.Name)
	if err != nil {
		return nil, err
	}
	if node == "" {
		return DMRemoveResult{}, nil
	}
	if _, err := Run(ctx, "dmsetup", "remove", a.Name); err != nil {
		if strings.Contains(strings.ToLower(err.Error()), "busy") {
			return DMRemoveResult{Busy: true, Holders: holdersOf(sysRoot, node, a.Name)}, nil
		}
		return nil, fmt.Errorf("removing %s: %w", a.Name, err)
	}
	return DMRemoveResult{Removed: true}, nil
}

func opDMChown(ctx context.Context, c Caller, raw json.RawMessage) (any, error) {
	var a DMNameArgs
	if err := decode("dm-chown", raw, &a); err != nil {
		return nil, err
	}
	if err := checkDMName(a.Name); err != nil {
		return nil, err
	}
	node, err := dmNode(sysRoot, a.Name)
	if err != nil || node == "" {
		return nil, fmt.Errorf("device-mapper device %s not found: %v", a.Name, err)
	}
	majmin, err := os.ReadFile(filepath.Join(sysRoot, "block", node, "dev"))
	if err != nil {
		return nil, fmt.Errorf("reading device number of %s: %w", a.Name, err)
	}
	path := "/dev/mapper/" + a.Name
	if _, err := os.Stat(path); err != nil {
		_, _ = Run(ctx, "dmsetup", "mknodes", a.Name)
	}
	real, err := filepath.EvalSymlinks(path)
	if err != nil || !strings.HasPrefix(real, "/dev/") {
		return nil, fmt.Errorf("resolving %s: %v", path, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(real, &st); err != nil {
		return nil, fmt.Errorf("checking %s: %w", real, err)
	}
	got := fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	if st.Mode&unix.S_IFMT != unix.S_IFBLK || got != strings.TrimSpace(string(majmin)) {
		return nil, fmt.Errorf("%w: %s is not the block device of %s", ErrRefused, real, a.Name)
	}
	if err := os.Chown(real, c.UID, c.GID); err != nil {
		return nil, fmt.Errorf("chowning %s to %d:%d: %w", real, c.UID, c.GID, err)
	}
	if err := os.Chmod(real, 0o600); err != nil {
		return nil, fmt.Errorf("chmod 0600 %s: %w", real, err)
	}
	return DMChownResult{Node: path}, nil
}

// openOwned opens path (under the caller's roots) without following a
// final symlink and checks it is a regular file.
func openOwned(c Caller, path string, write bool) (*os.File, error) {
	p, err := c.CheckPath(path)
	if err != nil {
		return nil, err
	}
	flag := os.O_RDONLY
	if write {
		flag = os.O_RDWR
	}
	f, err := os.OpenFile(p, flag|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrRefused, path)
	}
	return f, nil
}

// attachLoop binds f to a free loop device and returns its path and an
// open descriptor of it (close it when done; with autoclear that detaches).
func attachLoop(f *os.File, readOnly, autoclear bool) (string, *os.File, error) {
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return "", nil, err
	}
	defer ctl.Close()
	var flags uint32
	if readOnly {
		flags |= loFlagsReadOnly
	}
	if autoclear {
		flags |= loFlagsAutoclear
	}
	for try := 0; try < 20; try++ {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return "", nil, fmt.Errorf("finding a free loop device: %w", err)
		}
		dev := fmt.Sprintf("/dev/loop%d", n)
		lf, err := os.OpenFile(dev, os.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return "", nil, fmt.Errorf("opening %s: %w", dev, err)
		}
		cfg := unix.LoopConfig{Fd: uint32(f.Fd())}
		cfg.Info.Flags = flags
		err = unix.IoctlLoopConfigure(int(lf.Fd()), &cfg)
		if err == nil {
			return dev, lf, nil
		}
		lf.Close()
		if !errors.Is(err, unix.EBUSY) {
			return "", nil, fmt.Errorf("configuring %s: %w", dev, err)
		}
	}
	return "", nil, fmt.Errorf("no free loop device after 20 tries")
}

func setAutoclear(dev string) error {
	lf, err := os.OpenFile(dev, os.O_RDONLY, 0)
	if err != nil {
		return fmt.Errorf("opening %s: %w", dev, err)
	}
	defer lf.Close()
	info, err := unix.IoctlLoopGetStatus64(int(lf.Fd()))
	if err == nil {
		info.Flags |= loFlagsAutoclear
		err = unix.IoctlLoopSetStatus64(int(lf.Fd()), info)
	}
	if err != nil {
		return fmt.Errorf("setting autoclear on %s: %w", dev, err)
	}
	return nil
}

func checkDMName(name string) error {
	if len(name) > len("banger-")+101 || !dmNameRe.MatchString(name) {
		return fmt.Errorf("%w: device-mapper name %q must start with %q and use only a-z, 0-9 and -", ErrRefused, name, "banger-")
	}
	return nil
}

// checkLoopOwned checks dev is a loop device backed by backing, a path
// under the caller's roots.
func checkLoopOwned(c Caller, dev, backing string) error {
	if !loopDevRe.MatchString(dev) {
		return fmt.Errorf("%w: %q is not a loop device", ErrRefused, dev)
	}
	want, err := c.CheckPath(backing)
	if err != nil {
		return err
	}
	cur, err := loopBacking(sysRoot, dev)
	if err != nil {
		return err
	}
	if cur != want {
		return fmt.Errorf("%w: loop device %s is backed by %q, not %s", ErrRefused, dev, cur, want)
	}
	return nil
}

// loopBacking returns the file behind a loop device, "" when not attached.
func loopBacking(sys, dev string) (string, error) {
	if !loopDevRe.MatchString(dev) {
		return "", fmt.Errorf("%w: %q is not a loop device", ErrRefused, dev)
	}
	b, err := os.ReadFile(filepath.Join(sys, "block", filepath.Base(dev), "loop", "backing_file"))
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading backing file of %s: %w", dev, err)
	}
	return strings.TrimSuffix(strings.TrimSpace(string(b)), " (deleted)"), nil
}

// loopsBackedBy lists loop devices backed by path; with unheldOnly, those
// that no other block device (a dm table) holds.
func loopsBackedBy(sys, path string, unheldOnly bool) ([]string, error) {
	dirs, err := filepath.Glob(filepath.Join(sys, "block", "loop*"))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, d := range dirs {
		dev := "/dev/" + filepath.Base(d)
		b, err := loopBacking(sys, dev)
		if err != nil || b != path {
			continue
		}
		if unheldOnly {
			if h, _ := os.ReadDir(filepath.Join(d, "holders")); len(h) > 0 {
				continue
			}
		}
		out = append(out, dev)
	}
	return out, nil
}

// dmNode returns the kernel name ("dm-3") of the device-mapper device
// name, or "" when it does not exist.
func dmNode(sys, name string) (string, error) {
	dirs, err := filepath.Glob(filepath.Join(sys, "block", "dm-*"))
	if err != nil {
		return "", err
	}
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "dm", "name"))
		if err == nil && strings.TrimSpace(string(b)) == name {
			return filepath.Base(d), nil
		}
	}
	return "", nil
}

// holdersOf names what keeps a dm device open: stacked devices, processes
// with it open, and mounts of it.
func holdersOf(sys, node, name string) []string {
	var out []string
	hs, _ := os.ReadDir(filepath.Join(sys, "block", node, "holders"))
	for _, h := range hs {
		b, err := os.ReadFile(filepath.Join(sys, "block", h.Name(), "dm", "name"))
		if err == nil {
			out = append(out, "dm "+strings.TrimSpace(string(b)))
		} else {
			out = append(out, h.Name())
		}
	}
	fds, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	seen := map[string]bool{}
	for _, fd := range fds {
		l, err := os.Readlink(fd)
		if err != nil || (l != "/dev/"+node && l != "/dev/mapper/"+name) {
			continue
		}
		pid := strings.Split(fd, "/")[2]
		if seen[pid] {
			continue
		}
		seen[pid] = true
		comm, _ := os.ReadFile("/proc/" + pid + "/comm")
		out = append(out, fmt.Sprintf("pid %s (%s)", pid, strings.TrimSpace(string(comm))))
	}
	if majmin, err := os.ReadFile(filepath.Join(sys, "block", node, "dev")); err == nil {
		mi, _ := os.ReadFile("/proc/self/mountinfo")
		for _, line := range strings.Split(string(mi), "\n") {
			if f := strings.Fields(line); len(f) > 4 && f[2] == strings.TrimSpace(string(majmin)) {
				out = append(out, "mount "+f[4])
			}
		}
	}
	return out
}
