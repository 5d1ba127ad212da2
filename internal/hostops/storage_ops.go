package hostops

// Storage operations: loop devices, device-mapper snapshots and work-disk
// seeding run privileged; filesystem growth and the sysfs look-ups run as
// the calling process.
//
// Every file an op opens as root is resolved beneath the caller's roots
// (callerfs.go, internal/beneath), checked with fstat (the caller's, a
// regular file, one link) and handed on by descriptor (a loop device
// configured from the descriptor, or /proc/<pid>/fd/<n> for a child tool),
// so a user who swaps a path for a symlink or a hard link cannot redirect
// root. A loop device is the caller's when its backing inode is a file of
// the caller's; a device-mapper device when every device in its table is.
// Scratch space (rdump staging, mount points) is a root-owned 0700
// directory under os.TempDir, never a directory the user can rename.
// The loop and device-mapper primitives are in internal/blockdev.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"banger/internal/beneath"
	"banger/internal/blockdev"
)

const sysRoot = "/sys"

var (
	// A counted repetition like {0,100} compiles into 100 copies and cost
	// every banger process milliseconds at start; the length is checked apart.
	dmNameRe = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^banger-[a-z0-9][a-z0-9-]*$`) })
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
	p, err := blockdev.LoopBacking(sysRoot, dev)
	if errors.Is(err, blockdev.ErrNotLoop) {
		return "", fmt.Errorf("%w: %v", ErrRefused, err)
	}
	return p, err
}

// LoopsBackedBy lists the loop devices backed by path that no other device
// holds (a held loop belongs to a live device-mapper table). Unprivileged.
func (c *Client) LoopsBackedBy(ctx context.Context, path string) ([]string, error) {
	return blockdev.LoopsBackedBy(sysRoot, path, true)
}

// DMExists reports whether the device-mapper device name exists. Unprivileged.
func (c *Client) DMExists(ctx context.Context, name string) (bool, error) {
	n, err := blockdev.DMNode(sysRoot, name)
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
	dev, lf, err := blockdev.AttachLoop(f, a.ReadOnly, false)
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
	if !blockdev.IsLoopDev(a.Device) {
		return nil, fmt.Errorf("%w: %q is not a loop device", ErrRefused, a.Device)
	}
	cf := c.files()
	defer cf.Close()
	if _, err := cf.rootOf(a.Backing); err != nil {
		return nil, err
	}
	lf, err := blockdev.OpenLoop(a.Device)
	if err != nil {
		return nil, err
	}
	defer lf.Close() // while open, the loop keeps its binding
	if _, err := blockdev.Status(lf); errors.Is(err, blockdev.ErrNotAttached) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	bf, err := cf.open(a.Backing, unix.O_PATH)
	switch {
	case err == nil:
		err = sameBacking(lf, bf, a.Device, a.Backing)
		bf.Close()
	case errIsNotExist(err):
		// A backing file deleted after the attach: sysfs still names it.
		name, deleted, serr := blockdev.LoopBackingName(sysRoot, a.Device)
		if serr == nil && deleted && name == filepath.Clean(a.Backing) {
			err = nil
		} else {
			err = fmt.Errorf("%w: loop device %s is not backed by %s (%v)", ErrRefused, a.Device, a.Backing, err)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%w; leaving it alone", err)
	}
	if err := blockdev.Detach(lf); err != nil {
		return nil, err
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
	cf := c.files()
	defer cf.Close()
	lf, err := cf.ownedLoop(a.ImageLoop, a.ImageBacking)
	if err != nil {
		return nil, err
	}
	defer lf.Close()
	imgSectors, err := blockdev.Sectors(sysRoot, filepath.Base(a.ImageLoop))
	if err != nil {
		return nil, err
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
	if err := blockdev.SetAutoclear(lf); err != nil {
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
	cf := c.files()
	defer cf.Close()
	lf, err := cf.ownedLoop(a.COWLoop, a.COWBacking)
	if err != nil {
		return nil, err
	}
	defer lf.Close()
	node, err := blockdev.DMNode(sysRoot, a.Origin)
	if err != nil {
		return nil, fmt.Errorf("looking up origin %s: %w", a.Origin, err)
	}
	if node == "" {
		return nil, fmt.Errorf("%w: origin device-mapper device %s does not exist", ErrNotFound, a.Origin)
	}
	// The origin must be the caller's: a snapshot reads all of it.
	if err := cf.checkDM(ctx, dmsetupTable, a.Origin, 0, false); err != nil {
		return nil, err
	}
	sectors, err := blockdev.Sectors(sysRoot, node)
	if err != nil {
		return nil, err
	}
	majmin, err := blockdev.DevNum(sysRoot, node)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(sysRoot, "module", "dm_snapshot")); err != nil {
		_, _ = Run(ctx, "modprobe", "dm-snapshot") // the create below reports a missing target
	}
	table := fmt.Sprintf("0 %d snapshot %s %s P 8\n", sectors, majmin, a.COWLoop)
	if _, err := runInput(ctx, table, "dmsetup", "create", a.Name); err != nil {
		return nil, fmt.Errorf("creating snapshot %s: %w", a.Name, err)
	}
	if err := blockdev.SetAutoclear(lf); err != nil {
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
	node, err := blockdev.DMNode(sysRoot, a.Name)
	if err != nil {
		return nil, err
	}
	if node == "" {
		return DMRemoveResult{}, nil
	}
	cf := c.files()
	defer cf.Close()
	if err := cf.checkDM(ctx, dmsetupTable, a.Name, 1, true); err != nil {
		return nil, err
	}
	if _, err := Run(ctx, "dmsetup", "remove", a.Name); err != nil {
		if strings.Contains(strings.ToLower(err.Error()), "busy") {
			return DMRemoveResult{Busy: true, Holders: blockdev.Holders(sysRoot, node, a.Name)}, nil
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
	node, err := blockdev.DMNode(sysRoot, a.Name)
	if err != nil {
		return nil, fmt.Errorf("looking up device-mapper device %s: %w", a.Name, err)
	}
	if node == "" {
		return nil, fmt.Errorf("%w: device-mapper device %s does not exist", ErrNotFound, a.Name)
	}
	cf := c.files()
	defer cf.Close()
	if err := cf.checkDM(ctx, dmsetupTable, a.Name, 1, false); err != nil {
		return nil, err
	}
	majmin, err := blockdev.DevNum(sysRoot, node)
	if err != nil {
		return nil, err
	}
	nf, err := openMapperNode(a.Name)
	if errIsNotExist(err) {
		_, _ = Run(ctx, "dmsetup", "mknodes", a.Name)
		nf, err = openMapperNode(a.Name)
	}
	if err != nil {
		return nil, fmt.Errorf("opening /dev/mapper/%s: %w", a.Name, err)
	}
	defer nf.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(nf.Fd()), &st); err != nil {
		return nil, fmt.Errorf("checking /dev/mapper/%s: %w", a.Name, err)
	}
	got := fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	if st.Mode&unix.S_IFMT != unix.S_IFBLK || got != majmin {
		return nil, fmt.Errorf("%w: /dev/mapper/%s is not the block device of %s", ErrRefused, a.Name, a.Name)
	}
	if err := beneath.Chown(nf, c.UID, c.GID); err != nil {
		return nil, fmt.Errorf("handing /dev/mapper/%s to %d:%d: %w", a.Name, c.UID, c.GID, err)
	}
	if err := beneath.Chmod(nf, 0o600); err != nil {
		return nil, fmt.Errorf("handing /dev/mapper/%s to %d:%d: %w", a.Name, c.UID, c.GID, err)
	}
	return DMChownResult{Node: "/dev/mapper/" + a.Name}, nil
}

// openMapperNode opens /dev/mapper/name with O_PATH, resolved beneath /dev
// (udev's mapper/name -> ../dm-N symlink is followed, nothing leaves /dev).
func openMapperNode(name string) (*os.File, error) {
	dev, err := unix.Open("/dev", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(dev)
	how := unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS}
	fd, err := unix.Openat2(dev, "mapper/"+name, &how)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: "/dev/mapper/" + name, Err: err}
	}
	return os.NewFile(uintptr(fd), "/dev/mapper/"+name), nil
}

func checkDMName(name string) error {
	if len(name) > len("banger-")+101 || !dmNameRe().MatchString(name) {
		return fmt.Errorf("%w: device-mapper name %q must start with %q and use only a-z, 0-9 and -", ErrRefused, name, "banger-")
	}
	return nil
}
