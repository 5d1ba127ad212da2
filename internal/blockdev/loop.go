// Package blockdev holds the loop-device and device-mapper primitives the
// privileged storage ops use: attaching files to loop devices, reading a
// loop's backing (by inode through LOOP_GET_STATUS64, by name through
// sysfs), finding device-mapper devices and what holds them, and parsing
// device-mapper tables. It runs no commands and decides nothing about
// users; internal/hostops checks objects against its caller with these.
package blockdev

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

const (
	loFlagsReadOnly  = 1
	loFlagsAutoclear = 4
	// LoopMajor is the block major of loop devices.
	LoopMajor = 7
)

var loopDevRe = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^/dev/loop[0-9]+$`) })

// ErrNotLoop marks a device name that is not /dev/loopN.
var ErrNotLoop = errors.New("not a loop device")

// ErrNotAttached marks a loop device with no backing file.
var ErrNotAttached = errors.New("loop device not attached")

// IsLoopDev reports whether dev is a /dev/loopN name.
func IsLoopDev(dev string) bool { return loopDevRe().MatchString(dev) }

func checkLoopName(dev string) error {
	if !IsLoopDev(dev) {
		return fmt.Errorf("%q: %w", dev, ErrNotLoop)
	}
	return nil
}

// OpenLoop opens the loop device dev (a /dev/loopN name) read-only and
// checks it is a loop block device. While it stays open the device keeps
// its backing file: a detach by anyone else only marks it autoclear.
func OpenLoop(dev string) (*os.File, error) {
	if err := checkLoopName(dev); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(dev, os.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", dev, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK || unix.Major(st.Rdev) != LoopMajor {
		f.Close()
		return nil, fmt.Errorf("%s: %w", dev, ErrNotLoop)
	}
	return f, nil
}

// LoopFile is what a loop device is bound to.
type LoopFile struct {
	Dev   uint64 // st_dev of the backing file
	Inode uint64 // st_ino of the backing file
	Flags uint32
}

// Status reads the backing inode of the open loop device lf; a loop with
// no backing file gives ErrNotAttached.
func Status(lf *os.File) (LoopFile, error) {
	info, err := unix.IoctlLoopGetStatus64(int(lf.Fd()))
	if errors.Is(err, unix.ENXIO) {
		return LoopFile{}, ErrNotAttached
	}
	if err != nil {
		return LoopFile{}, fmt.Errorf("reading the status of %s: %w", lf.Name(), err)
	}
	return LoopFile{Dev: info.Device, Inode: info.Inode, Flags: info.Flags}, nil
}

// Same reports whether the loop is bound to the file with stat st.
func (l LoopFile) Same(st unix.Stat_t) bool { return l.Dev == st.Dev && l.Inode == st.Ino }

// Detach detaches the open loop device lf; with another opener (a dm
// table) the kernel turns this into autoclear. A loop that is not
// attached is fine.
func Detach(lf *os.File) error {
	if err := unix.IoctlSetInt(int(lf.Fd()), unix.LOOP_CLR_FD, 0); err != nil && !errors.Is(err, unix.ENXIO) {
		return fmt.Errorf("detaching %s: %w", lf.Name(), err)
	}
	return nil
}

// AttachLoop binds f to a free loop device and returns its path and an
// open descriptor of it (close it when done; with autoclear that detaches).
func AttachLoop(f *os.File, readOnly, autoclear bool) (string, *os.File, error) {
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR|unix.O_CLOEXEC, 0)
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

// SetAutoclear marks the open loop device lf to detach when its last
// opener (the dm table over it) closes.
func SetAutoclear(lf *os.File) error {
	info, err := unix.IoctlLoopGetStatus64(int(lf.Fd()))
	if err == nil {
		info.Flags |= loFlagsAutoclear
		err = unix.IoctlLoopSetStatus64(int(lf.Fd()), info)
	}
	if err != nil {
		return fmt.Errorf("setting autoclear on %s: %w", lf.Name(), err)
	}
	return nil
}

// LoopBacking returns the file behind a loop device as sysfs names it
// (without " (deleted)"), "" when not attached. sys is the sysfs mount.
func LoopBacking(sys, dev string) (string, error) {
	p, _, err := LoopBackingName(sys, dev)
	return p, err
}

// LoopBackingName is LoopBacking that also says whether the backing file
// has been deleted.
func LoopBackingName(sys, dev string) (path string, deleted bool, err error) {
	if err := checkLoopName(dev); err != nil {
		return "", false, err
	}
	b, err := os.ReadFile(filepath.Join(sys, "block", filepath.Base(dev), "loop", "backing_file"))
	if errors.Is(err, os.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("reading backing file of %s: %w", dev, err)
	}
	s := strings.TrimSpace(string(b))
	path, deleted = strings.CutSuffix(s, " (deleted)")
	return path, deleted, nil
}

// LoopsBackedBy lists loop devices whose sysfs backing file is path; with
// unheldOnly, those that no other block device (a dm table) holds.
func LoopsBackedBy(sys, path string, unheldOnly bool) ([]string, error) {
	dirs, err := filepath.Glob(filepath.Join(sys, "block", "loop*"))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, d := range dirs {
		dev := "/dev/" + filepath.Base(d)
		b, err := LoopBacking(sys, dev)
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

// SysInt reads one integer from a sysfs file.
func SysInt(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// Sectors is the size of the block device with kernel name node ("loop3",
// "dm-0") in 512-byte sectors.
func Sectors(sys, node string) (int64, error) {
	n, err := SysInt(filepath.Join(sys, "block", node, "size"))
	if err != nil {
		return 0, fmt.Errorf("reading size of %s: %w", node, err)
	}
	return n, nil
}
