package hostops

// The caller's files and devices as a privileged op sees them: each root
// opened once per op (internal/beneath), every path resolved beneath it,
// and loop and device-mapper devices accepted only when the files behind
// them are the caller's by inode, owner and link count.

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"banger/internal/beneath"
	"banger/internal/blockdev"
)

// callerFS is the caller's roots for one op, each opened at most once.
type callerFS struct {
	c     Caller
	sys   string // sysfs mount (tests use a fake one for dm look-ups)
	roots map[string]*beneath.Dir
}

// files returns the caller's roots for one op; Close it when the op ends.
func (c Caller) files() *callerFS {
	return &callerFS{c: c, sys: sysRoot, roots: map[string]*beneath.Dir{}}
}

// Close closes the opened roots.
func (f *callerFS) Close() {
	for _, d := range f.roots {
		d.Close()
	}
}

func (f *callerFS) owner() beneath.Owner { return beneath.Owner{UID: f.c.UID, GID: f.c.GID} }

// refused turns a beneath refusal into ErrRefused, keeping the chain (an
// fs.ErrNotExist underneath still matches).
func refused(err error) error {
	if err != nil && errors.Is(err, beneath.ErrRefused) && !errors.Is(err, ErrRefused) {
		return fmt.Errorf("%w: %w", ErrRefused, err)
	}
	return err
}

// rootOf returns the caller root p lies strictly beneath (lexically: an
// absolute path with no ".." component), or a refusal naming the roots.
func (f *callerFS) rootOf(p string) (string, error) {
	if p == "" || !filepath.IsAbs(p) {
		return "", fmt.Errorf("%w: path %q must be absolute", ErrRefused, p)
	}
	for _, c := range strings.Split(p, "/") {
		if c == ".." {
			return "", fmt.Errorf("%w: path %q contains \"..\"", ErrRefused, p)
		}
	}
	for _, r := range f.c.Roots {
		if beneath.Within(r, p) {
			return filepath.Clean(r), nil
		}
	}
	return "", fmt.Errorf("%w: path %q is outside banger's directories (%s)", ErrRefused, p, strings.Join(f.c.Roots, ", "))
}

// resolve opens (once) the root p lies beneath and returns it with p
// relative to it. With create, missing components of the root itself are
// made (beneath.EnsureRoot).
func (f *callerFS) resolve(p string, create bool) (*beneath.Dir, string, error) {
	r, err := f.rootOf(p)
	if err != nil {
		return nil, "", err
	}
	d, ok := f.roots[r]
	if !ok {
		if create {
			d, err = beneath.EnsureRoot(r, f.owner())
		} else {
			d, err = beneath.OpenRoot(r, f.owner())
		}
		if err != nil {
			return nil, "", refused(fmt.Errorf("banger directory %w", err))
		}
		f.roots[r] = d
	}
	rel, err := d.Rel(p)
	return d, rel, refused(err)
}

// open opens the caller's regular file p (owned by the caller, one link)
// with flag (O_RDONLY, O_RDWR, or O_PATH for a descriptor only to fstat).
func (f *callerFS) open(p string, flag int) (*os.File, error) {
	d, rel, err := f.resolve(p, false)
	if err != nil {
		return nil, err
	}
	file, err := d.Open(rel, flag)
	return file, refused(err)
}

// create makes the new file p, owned by the caller with mode.
func (f *callerFS) create(p string, mode uint32) (*beneath.NewFile, error) {
	d, rel, err := f.resolve(p, false)
	if err != nil {
		return nil, err
	}
	n, err := d.Create(rel, mode)
	return n, refused(err)
}

// mkdirAll makes the directory p and its missing parents (the root's own
// missing components included), owned by the caller.
func (f *callerFS) mkdirAll(p string, mode uint32) error {
	d, rel, err := f.resolve(p, true)
	if err != nil {
		return err
	}
	sub, err := d.MkdirAll(rel, mode)
	if err != nil {
		return refused(err)
	}
	return sub.Close()
}

// openDir opens the caller's directory p.
func (f *callerFS) openDir(p string) (*beneath.Dir, error) {
	d, rel, err := f.resolve(p, false)
	if err != nil {
		return nil, err
	}
	sub, err := d.OpenDir(rel)
	return sub, refused(err)
}

// openOwned opens the caller's regular file path (under the caller's
// roots, owned by the caller, one link) read-only or read-write.
func openOwned(c Caller, path string, write bool) (*os.File, error) {
	cf := c.files()
	defer cf.Close()
	flag := unix.O_RDONLY
	if write {
		flag = unix.O_RDWR
	}
	return cf.open(path, flag)
}

// ownedLoop opens the loop device dev and checks it is bound, by device
// and inode, to the caller's file backing (owned by the caller, one link).
// Keep the returned descriptor open while acting on dev: while it is open
// the binding cannot change.
func (f *callerFS) ownedLoop(dev, backing string) (*os.File, error) {
	if !blockdev.IsLoopDev(dev) {
		return nil, fmt.Errorf("%w: %q is not a loop device", ErrRefused, dev)
	}
	bf, err := f.open(backing, unix.O_PATH)
	if err != nil {
		return nil, err
	}
	defer bf.Close()
	lf, err := blockdev.OpenLoop(dev)
	if err != nil {
		return nil, err
	}
	if err := sameBacking(lf, bf, dev, backing); err != nil {
		lf.Close()
		return nil, err
	}
	return lf, nil
}

// sameBacking checks the open loop lf is bound to the inode of bf.
func sameBacking(lf, bf *os.File, dev, backing string) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(bf.Fd()), &st); err != nil {
		return fmt.Errorf("checking %s: %w", backing, err)
	}
	lo, err := blockdev.Status(lf)
	if errors.Is(err, blockdev.ErrNotAttached) {
		return fmt.Errorf("%w: loop device %s is not attached", ErrRefused, dev)
	}
	if err != nil {
		return err
	}
	if !lo.Same(st) {
		return fmt.Errorf("%w: loop device %s is backed by another file, not %s", ErrRefused, dev, backing)
	}
	return nil
}

// callerLoop checks the loop device dev is backed by a file of the caller:
// its sysfs backing name lies beneath a root and that file, opened beneath
// it, is the loop's inode. With deletedOK a loop whose backing file was
// deleted from beneath a root passes (its owner can no longer be read;
// removal is the only use).
func (f *callerFS) callerLoop(dev string, deletedOK bool) error {
	name, deleted, err := blockdev.LoopBackingName(f.sys, dev)
	if err != nil {
		return err
	}
	if name == "" {
		return fmt.Errorf("%w: loop device %s is not attached", ErrRefused, dev)
	}
	if _, err := f.rootOf(name); err != nil {
		return fmt.Errorf("%w: loop device %s is backed by %s, outside banger's directories", ErrRefused, dev, name)
	}
	if deleted {
		if deletedOK {
			return nil
		}
		return fmt.Errorf("%w: the backing file %s of loop device %s was deleted", ErrRefused, name, dev)
	}
	bf, err := f.open(name, unix.O_PATH)
	if err != nil {
		return err
	}
	defer bf.Close()
	lf, err := blockdev.OpenLoop(dev)
	if err != nil {
		return err
	}
	defer lf.Close()
	return sameBacking(lf, bf, dev, name)
}

// dmTableOf reads the table of a device-mapper device.
type dmTableOf func(ctx context.Context, name string) (string, error)

func dmsetupTable(ctx context.Context, name string) (string, error) {
	out, err := Run(ctx, "dmsetup", "table", name)
	if err != nil {
		return "", fmt.Errorf("reading the table of %s: %w", name, err)
	}
	return string(out), nil
}

// checkDM checks that the device-mapper device name (already checked to
// carry banger's prefix) is the caller's: every device its table uses is a
// loop backed by a file of the caller (callerLoop), or a banger device
// whose own table passes (one level: a snapshot over its origin).
func (f *callerFS) checkDM(ctx context.Context, tableOf dmTableOf, name string, depth int, deletedOK bool) error {
	text, err := tableOf(ctx, name)
	if err != nil {
		return err
	}
	targets, err := blockdev.ParseTable(text)
	if err != nil {
		return fmt.Errorf("device-mapper device %s: %w", name, err)
	}
	if len(targets) == 0 {
		return fmt.Errorf("%w: device-mapper device %s has no table", ErrRefused, name)
	}
	for _, t := range targets {
		devs, err := t.Devices()
		if err != nil {
			return fmt.Errorf("%w: device-mapper device %s: %v", ErrRefused, name, err)
		}
		for _, majmin := range devs {
			d, err := blockdev.DeviceAt(f.sys, majmin)
			if err != nil {
				return fmt.Errorf("%w: device-mapper device %s: %v", ErrRefused, name, err)
			}
			switch {
			case d.Kind == blockdev.KindLoop:
				if err := f.callerLoop("/dev/"+d.Node, deletedOK); err != nil {
					return fmt.Errorf("device-mapper device %s: %w", name, err)
				}
			case d.Kind == blockdev.KindDM && depth > 0:
				if err := checkDMName(d.Name); err != nil {
					return fmt.Errorf("device-mapper device %s stacks on %s: %w", name, d.Name, err)
				}
				if err := f.checkDM(ctx, tableOf, d.Name, depth-1, deletedOK); err != nil {
					return err
				}
			default:
				return fmt.Errorf("%w: device-mapper device %s uses %s (%s), which is not banger's", ErrRefused, name, d.Node, majmin)
			}
		}
	}
	return nil
}

// errIsNotExist reports a missing file under any wrapping.
func errIsNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
