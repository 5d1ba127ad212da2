// Package storage owns a VM's disks: the copy-on-write root disk (a
// device-mapper snapshot over the shared read-only image, or a sparse copy
// of it where device-mapper is missing), the persistent work disk mounted
// on /root in the guest, and the repair of work disks whose home sits one
// level too deep. Host work that needs root goes through Host, the
// privileged seam (DESIGN.md §1).
package storage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"banger/internal/capability"
	"banger/internal/hostops"

	"golang.org/x/sys/unix"
)

// Drivers.
const (
	DriverDM   = "dm"
	DriverCopy = "copy"
)

// Phases of State. An empty phase means the VM has no root
// disk (never created, or a create that did not finish).
const (
	PhaseCreating    = "creating"     // CreateRoot is making the root disk or COW file
	PhaseDown        = "down"         // disks exist, nothing attached
	PhaseSettingUp   = "setting-up"   // Activate is attaching devices
	PhaseReady       = "ready"        // RootDisk can be opened by Firecracker
	PhaseTearingDown = "tearing-down" // Deactivate (or a rollback) is releasing devices
)

// Files CreateRoot makes in the VM directory.
const (
	fileCopyRoot = "rootfs.ext4" // the copy driver's root disk
	fileCOW      = "cow.img"     // the dm driver's copy-on-write store
)

// Handle kinds, roles and states as recorded in Handle.
const (
	KindLoop      = "loop"
	KindDM        = "dm"
	RoleImage     = "image"
	RoleCOW       = "cow"
	RoleOrigin    = "origin"
	RoleSnapshot  = "snapshot"
	StateIntended = "intended"
	StateDone     = "done"
)

// Host is the privileged seam as storage needs it; *hostops.Client
// implements it. LoopBacking, LoopsBackedBy, DMExists and GrowFS need no
// privilege.
type Host interface {
	LoopAttach(ctx context.Context, path string, readOnly bool) (string, error)
	LoopDetach(ctx context.Context, dev, backing string) error
	LoopBacking(ctx context.Context, dev string) (string, error)
	LoopsBackedBy(ctx context.Context, path string) ([]string, error)
	DMCreateOrigin(ctx context.Context, name, imageLoop, imageBacking string, sizeBytes int64) error
	DMCreateSnapshot(ctx context.Context, name, origin, cowLoop, cowBacking string) error
	DMRemove(ctx context.Context, name string) error // *hostops.BusyError while open
	DMExists(ctx context.Context, name string) (bool, error)
	DMChown(ctx context.Context, name string) (string, error)
	GrowFS(ctx context.Context, path string) (bool, error)
	SeedWorkDisk(ctx context.Context, image, out string) error
}

var _ Host = (*hostops.Client)(nil)

// Options configure a Manager.
type Options struct {
	Driver      string // "auto" (or "") | "dm" | "copy"
	Host        Host
	Log         *slog.Logger
	SeedDir     string        // cache of work-disk seeds, under the state dir
	BusyTimeout time.Duration // how long a busy dm device is retried; default 10s
	// Record persists the VM's storage state; called before and after each
	// host step. Nil records nothing.
	Record func(ctx context.Context, vmID string, st State) error
}

// Manager prepares and releases VM disks.
type Manager struct {
	driver string
	host   Host
	log    *slog.Logger
	seeds  string
	busy   time.Duration
	record func(ctx context.Context, vmID string, st State) error
	// mu serializes loop and dm steps, so one VM's teardown never detaches
	// a loop device another VM has just been given under the same number.
	mu     sync.Mutex
	seedMu sync.Mutex
}

// Disk is one VM's storage as the daemon knows it.
type Disk struct {
	VMID      string
	VMDir     string // user-owned 0700 dir
	ImagePath string // read-only base ext4 image
	ImageID   string // the image's ID; names its cached grown copies (grown.go), "" for none
	DiskBytes int64  // VM root disk size (>= image size)
	State     State
}

var vmIDRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`) // length checked apart: counted repetitions are slow to compile

// New returns a Manager. Driver "auto" resolves with Detect.
func New(opts Options) (*Manager, error) {
	if opts.Host == nil {
		return nil, errors.New("storage: no privileged host seam given")
	}
	driver := opts.Driver
	switch driver {
	case "", "auto":
		driver, _ = Detect()
	case DriverDM, DriverCopy:
	default:
		return nil, fmt.Errorf("unknown storage_driver %q: use auto, dm or copy", opts.Driver)
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	busy := opts.BusyTimeout
	if busy <= 0 {
		busy = 10 * time.Second
	}
	record := opts.Record
	if record == nil {
		record = func(context.Context, string, State) error { return nil }
	}
	return &Manager{driver: driver, host: opts.Host, log: log, seeds: opts.SeedDir, busy: busy, record: record}, nil
}

// Driver is the resolved driver: "dm" or "copy".
func (m *Manager) Driver() string { return m.driver }

// Detect picks the driver for "auto": dm when the kernel's device-mapper
// answers and has a snapshot target (capability.DMSnapshots, which doctor
// reports too), else copy. reason says why.
func Detect() (driver, reason string) {
	how, err := capability.DMSnapshots()
	if err != nil {
		return DriverCopy, err.Error() + ": each VM gets a full sparse copy of its image"
	}
	return DriverDM, how
}

// save records st for vmID.
func (m *Manager) save(ctx context.Context, vmID string, st State) error {
	if err := m.record(ctx, vmID, st); err != nil {
		return fmt.Errorf("recording storage state of vm %s: %w", vmID, err)
	}
	return nil
}

// checkImage checks the image is an ext4 file and returns its size.
func checkImage(path string) (int64, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("image %s does not exist; register or rebuild the image", path)
	}
	if err != nil {
		return 0, fmt.Errorf("opening image %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("checking image %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return 0, fmt.Errorf("image %s is not a regular file", path)
	}
	fsBytes, err := hostops.Ext4Bytes(f)
	if err != nil {
		return 0, fmt.Errorf("image %s: %w; rebuild or re-register it", path, err)
	}
	if fsBytes > fi.Size() {
		return 0, fmt.Errorf("image %s is truncated: %d bytes, its filesystem needs %d", path, fi.Size(), fsBytes)
	}
	return fi.Size(), nil
}

func (d Disk) check() error {
	if len(d.VMID) > 61 || !vmIDRe.MatchString(d.VMID) {
		return fmt.Errorf("bad vm id %q: lowercase letters, digits and - only", d.VMID)
	}
	fi, err := os.Stat(d.VMDir)
	if err != nil {
		return fmt.Errorf("vm %s: directory %q missing: %w", d.VMID, d.VMDir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("vm %s: %q is not a directory", d.VMID, d.VMDir)
	}
	return nil
}

// checkSize validates DiskBytes against the image.
func (d Disk) checkSize(imgBytes int64) error {
	if d.DiskBytes < imgBytes {
		return fmt.Errorf("disk size %s for vm %s is smaller than its image %s (%s); use a disk size of at least %s",
			human(d.DiskBytes), d.VMID, d.ImagePath, human(imgBytes), human(imgBytes))
	}
	if d.DiskBytes%4096 != 0 {
		return fmt.Errorf("disk size %d for vm %s is not a multiple of 4096 bytes", d.DiskBytes, d.VMID)
	}
	return nil
}

func human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for v := n / unit; v >= unit; v /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// Made says how CreateRoot made a root disk, for vm create's stage line.
type Made struct {
	Driver string // DriverDM | DriverCopy
	Copy   string // copy driver: CopyReflink | CopySparse
	Grown  string // copy driver: GrownCached | GrownBuilt | GrownInPlace
	Took   time.Duration
}

// How the copy driver's root disk came to be its size (Made.Grown).
const (
	GrownCached  = "cached"   // a copy of the image grown to that size once and cached (grown.go)
	GrownBuilt   = "built"    // the same, the grown image built for this create first
	GrownInPlace = "in place" // the image copied, then grown in the copy (no cache)
)

// String is what vm create's storage stage says after "root disk: ":
// "copy (reflink of the cached grown root, 3 ms)", "copy (sparse, grown
// root built, 1.2 s)", "dm snapshot (sparse COW file, 1 ms)".
func (m Made) String() string {
	took := formatTook(m.Took)
	if m.Driver == DriverDM {
		return "dm snapshot (sparse COW file, " + took + ")"
	}
	how := m.Copy
	switch m.Grown {
	case GrownCached:
		how += " of the cached grown root"
	case GrownBuilt:
		how += ", grown root built"
	case GrownInPlace:
		how += ", grown in place"
	}
	return m.Driver + " (" + how + ", " + took + ")"
}

// DriverLabel names a driver's root disk as stage lines do: "dm snapshot"
// or "copy".
func DriverLabel(driver string) string {
	if driver == DriverDM {
		return "dm snapshot"
	}
	return driver
}

// formatTook is "3 ms" below a second, else "1.2 s".
func formatTook(d time.Duration) string {
	if d < time.Second {
		return fmt.Sprintf("%d ms", d.Round(time.Millisecond).Milliseconds())
	}
	return fmt.Sprintf("%.1f s", d.Seconds())
}

// CreateRoot makes the VM's writable layer: copy, a sparse or reflinked
// copy of the image at VMDir/rootfs.ext4 grown to DiskBytes; dm, a sparse
// COW file VMDir/cow.img big enough for DiskBytes plus snapshot metadata.
// Made says which way it went and how long it took.
func (m *Manager) CreateRoot(ctx context.Context, d Disk) (State, Made, error) {
	t0 := time.Now()
	made := Made{Driver: m.driver}
	if err := d.check(); err != nil {
		return d.State, made, err
	}
	if p := d.State.Phase; p != "" && p != PhaseCreating {
		return d.State, made, fmt.Errorf("vm %s already has a root disk (storage phase %s)", d.VMID, p)
	}
	imgBytes, err := checkImage(d.ImagePath)
	if err != nil {
		return d.State, made, err
	}
	if err := d.checkSize(imgBytes); err != nil {
		return d.State, made, err
	}
	st := State{Driver: m.driver, WorkDisk: d.State.WorkDisk, Phase: PhaseCreating}
	if m.driver == DriverDM {
		st.COWPath = filepath.Join(d.VMDir, fileCOW)
		st.RootDisk = "/dev/mapper/" + snapName(d.VMID)
	} else {
		st.RootDisk = filepath.Join(d.VMDir, fileCopyRoot)
	}
	if err := m.save(ctx, d.VMID, st); err != nil {
		return d.State, made, err
	}
	if m.driver == DriverDM {
		err = makeCOW(st.COWPath, cowBytes(d.DiskBytes))
	} else {
		err = m.copyRoot(ctx, d.ImageID, d.ImagePath, st.RootDisk, d.DiskBytes, &made)
	}
	if err != nil {
		empty := State{Driver: m.driver, WorkDisk: d.State.WorkDisk}
		return empty, made, errors.Join(fmt.Errorf("creating root disk of vm %s: %w", d.VMID, err), m.save(ctx, d.VMID, empty))
	}
	st.Phase = PhaseDown
	made.Took = time.Since(t0)
	return st, made, m.save(ctx, d.VMID, st)
}

// Activate makes the root disk openable by Firecracker before a boot.
func (m *Manager) Activate(ctx context.Context, d Disk) (State, error) {
	if err := d.check(); err != nil {
		return d.State, err
	}
	if d.State.Phase == "" || d.State.Phase == PhaseCreating {
		return d.State, fmt.Errorf("vm %s has no root disk; it was never created completely", d.VMID)
	}
	// A VM keeps the driver it was created with.
	if d.State.Driver == DriverCopy || (d.State.Driver == "" && m.driver == DriverCopy) {
		st := d.State
		if _, err := os.Stat(st.RootDisk); err != nil {
			return st, fmt.Errorf("root disk of vm %s: %w", d.VMID, err)
		}
		st.Phase = PhaseReady
		return st, m.save(ctx, d.VMID, st)
	}
	return m.activateDM(ctx, d)
}

// Deactivate releases what Activate made, in reverse order. A busy device
// is retried up to BusyTimeout; on failure the state keeps what is left so
// the next call carries on.
func (m *Manager) Deactivate(ctx context.Context, d Disk) (State, error) {
	st := d.State
	if len(st.Handles) == 0 && st.Phase != PhaseReady && st.Phase != PhaseSettingUp && st.Phase != PhaseTearingDown {
		return st, nil
	}
	st, err := m.release(ctx, d.VMID, st)
	if err != nil {
		return st, fmt.Errorf("deactivating storage of vm %s: %w", d.VMID, err)
	}
	return st, nil
}

// Remove deletes the VM's disks: the files its state names and the ones
// CreateRoot makes under VMDir (so a create that never recorded them
// leaves nothing). Files already gone are fine, so a VM whose disks or
// directory are partly gone is removed all the same. The storage must be
// deactivated first.
func (m *Manager) Remove(ctx context.Context, d Disk) error {
	st := d.State
	if len(st.Handles) > 0 || st.Phase == PhaseReady || st.Phase == PhaseSettingUp || st.Phase == PhaseTearingDown {
		return fmt.Errorf("removing disks of vm %s: storage still active (phase %s); stop the vm first", d.VMID, st.Phase)
	}
	if d.VMDir == "" || !filepath.IsAbs(d.VMDir) {
		return fmt.Errorf("removing disks of vm %s: bad vm directory %q", d.VMID, d.VMDir)
	}
	dir := filepath.Clean(d.VMDir)
	paths := []string{st.COWPath, st.WorkDisk}
	if st.WorkDisk != "" {
		paths = append(paths, st.WorkDisk+".tmp")
	}
	if st.RootDisk != "" && (st.Driver == DriverCopy || strings.HasPrefix(st.RootDisk, dir+string(filepath.Separator))) {
		paths = append(paths, st.RootDisk, st.RootDisk+".tmp")
	}
	for _, name := range []string{fileCopyRoot, fileCopyRoot + ".tmp", fileCOW} {
		if p := filepath.Join(dir, name); !slices.Contains(paths, p) {
			paths = append(paths, p)
		}
	}
	var errs []error
	for _, p := range paths {
		if p == "" {
			continue
		}
		if !strings.HasPrefix(filepath.Clean(p), dir+string(filepath.Separator)) {
			errs = append(errs, fmt.Errorf("not removing %s: outside the directory %s of vm %s", p, d.VMDir, d.VMID))
			continue
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, unix.ENOTDIR) {
			errs = append(errs, fmt.Errorf("removing %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// Recover finishes or undoes a half-done CreateRoot, Activate or
// Deactivate after a daemon restart, from the recorded state: an
// unfinished create is undone (empty phase: create again), an unfinished
// setup or teardown ends down, and a ready VM whose devices vanished (a
// host reboot) is released and ends down.
func (m *Manager) Recover(ctx context.Context, d Disk) (State, error) {
	st := d.State
	switch st.Phase {
	case "":
		return st, nil
	case PhaseCreating:
		half := []string{st.COWPath}
		if st.RootDisk != "" {
			half = append(half, st.RootDisk+".tmp")
		}
		for _, p := range half {
			if p != "" && filepath.IsAbs(p) && strings.HasPrefix(p, d.VMDir+string(filepath.Separator)) {
				if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
					return st, fmt.Errorf("removing half-made %s of vm %s: %w", p, d.VMID, err)
				}
			}
		}
		st = State{Driver: st.Driver, WorkDisk: st.WorkDisk}
		if st.Driver == DriverCopy {
			if _, err := os.Stat(d.State.RootDisk); err == nil {
				st.RootDisk, st.Phase = d.State.RootDisk, PhaseDown // the rename happened
			}
		}
		return st, m.save(ctx, d.VMID, st)
	case PhaseReady:
		ok, err := m.present(ctx, st)
		if err != nil {
			return st, fmt.Errorf("checking devices of vm %s: %w", d.VMID, err)
		}
		if ok {
			return st, nil
		}
	}
	if st.Driver == DriverCopy {
		st.Phase = PhaseDown
		return st, m.save(ctx, d.VMID, st)
	}
	st, err := m.release(ctx, d.VMID, st)
	if err != nil {
		return st, fmt.Errorf("recovering storage of vm %s: %w", d.VMID, err)
	}
	return st, nil
}
