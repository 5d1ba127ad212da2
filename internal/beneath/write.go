package beneath

// Changing things beneath a directory: making directories and files the
// user will own, removing names, and setting modes and owners through
// descriptors.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// mkdirOwned creates name in the directory fd (at path parent), which must
// be owned by o.UID unless o.UID is 0, opens it without following a
// symlink, and hands it to o with the given mode. A directory that appeared
// there meanwhile is accepted only if o.UID already owns it.
func mkdirOwned(fd int, parent, name string, mode uint32, o Owner) (int, error) {
	full := filepath.Join(parent, name)
	var pst unix.Stat_t
	if err := unix.Fstat(fd, &pst); err != nil {
		return -1, err
	}
	if o.UID != 0 && int(pst.Uid) != o.UID {
		return -1, refuse(full, "is missing and its parent %s is owned by uid %d, not %d; create it yourself", parent, pst.Uid, o.UID)
	}
	// 0700 whatever the umask: adoptDir tells a directory made here from
	// one swapped in by its mode, then sets the wanted mode.
	if err := unix.Mkdirat(fd, name, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
		return -1, err
	}
	nfd, err := openat2(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0, resolveBeneath)
	if err != nil {
		return -1, err
	}
	if err := adoptDir(nfd, full, mode, o); err != nil {
		unix.Close(nfd)
		return -1, err
	}
	return nfd, nil
}

// adoptDir hands a directory this process just made (owned by the euid, no
// group or other bits, at most two links) to o with mode. One the user owns
// already is kept as it is. Anything else was swapped in and is not ours to
// give away: a user can move only a directory they can write to (rename
// rewrites its ".."), which a root-owned one without group or other bits
// never is.
func adoptDir(fd int, path string, mode uint32, o Owner) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	switch {
	case int(st.Uid) == o.UID && int(st.Uid) != os.Geteuid():
		return nil // the user's own directory
	case int(st.Uid) == os.Geteuid() && st.Mode&0o077 == 0 && st.Nlink <= 2:
	default:
		return refuse(path, "appeared while being created, owned by uid %d with mode %04o; leaving it alone", st.Uid, st.Mode&0o7777)
	}
	if err := unix.Fchown(fd, o.UID, o.GID); err != nil {
		return &os.PathError{Op: "fchown", Path: path, Err: err}
	}
	if err := unix.Fchmod(fd, mode); err != nil {
		return &os.PathError{Op: "fchmod", Path: path, Err: err}
	}
	return nil
}

// MkdirAll makes the directory rel beneath d and every missing directory
// above it, one component at a time, and returns it open. Existing
// directories must belong to d's owner; created ones are handed to the
// owner with mode 0700, and the final one gets mode.
func (d *Dir) MkdirAll(rel string, mode uint32) (*Dir, error) {
	if err := d.checkRel(rel); err != nil {
		return nil, err
	}
	fd, err := unix.Dup(d.Fd())
	if err != nil {
		return nil, err
	}
	cur := d.path
	comps := strings.Split(rel, "/")
	for i, comp := range comps {
		m := uint32(0o700)
		if i == len(comps)-1 {
			m = mode
		}
		next := cur + "/" + comp
		nfd, err := openat2(fd, comp, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0, resolveBeneath)
		if errors.Is(err, unix.ENOENT) {
			nfd, err = mkdirOwned(fd, cur, comp, m, d.owner)
		}
		err = symlinkOrNotDir(fd, comp, err)
		unix.Close(fd)
		if err != nil {
			return nil, pathErr("mkdir", next, err)
		}
		sub := &Dir{f: os.NewFile(uintptr(nfd), next), path: next, owner: d.owner}
		if err := sub.checkOwned(); err != nil {
			sub.Close()
			return nil, err
		}
		if i == len(comps)-1 {
			if err := unix.Fchmod(nfd, mode); err != nil {
				sub.Close()
				return nil, &os.PathError{Op: "fchmod", Path: next, Err: err}
			}
			return sub, nil
		}
		// Keep the descriptor for the next step; sub only wrapped it.
		if fd, err = unix.Dup(nfd); err != nil {
			sub.Close()
			return nil, err
		}
		sub.Close()
		cur = next
	}
	panic("unreachable")
}

// NewFile is a file just created beneath a directory by Create.
type NewFile struct {
	*os.File
	parent *os.File
	name   string
}

// Discard closes the file and removes it if its name still refers to it
// (a name the user swapped meanwhile is left alone: it is theirs).
func (n *NewFile) Discard() error {
	defer n.parent.Close()
	var mine, there unix.Stat_t
	err := unix.Fstat(int(n.Fd()), &mine)
	n.File.Close()
	if err != nil {
		return err
	}
	if unix.Fstatat(int(n.parent.Fd()), n.name, &there, unix.AT_SYMLINK_NOFOLLOW) != nil ||
		there.Dev != mine.Dev || there.Ino != mine.Ino {
		return nil
	}
	if err := unix.Unlinkat(int(n.parent.Fd()), n.name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return &os.PathError{Op: "unlink", Path: n.Name(), Err: err}
	}
	return nil
}

// Close closes the file and its parent directory, keeping the file.
func (n *NewFile) Close() error {
	n.parent.Close()
	return n.File.Close()
}

// Create makes the new file rel beneath d (O_CREAT|O_EXCL|O_NOFOLLOW, so
// nothing there already, not even a symlink, is reused) in a directory d's
// owner owns, hands it to the owner with mode, and returns it open
// read-write.
func (d *Dir) Create(rel string, mode uint32) (*NewFile, error) {
	if err := d.checkRel(rel); err != nil {
		return nil, err
	}
	parent := d
	dir, base := filepath.Split(rel)
	if dir != "" {
		var err error
		if parent, err = d.OpenDir(strings.TrimSuffix(dir, "/")); err != nil {
			return nil, err
		}
	} else {
		fd, err := unix.Dup(d.Fd())
		if err != nil {
			return nil, err
		}
		parent = &Dir{f: os.NewFile(uintptr(fd), d.path), path: d.path, owner: d.owner}
		if err := parent.checkOwned(); err != nil {
			parent.Close()
			return nil, err
		}
	}
	fd, err := openat2(parent.Fd(), base, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW, mode&0o777, resolveBeneath)
	if err != nil {
		parent.Close()
		return nil, pathErr("create", d.join(rel), err)
	}
	n := &NewFile{File: os.NewFile(uintptr(fd), d.join(rel)), parent: parent.f, name: base}
	if err := unix.Fchown(fd, d.owner.UID, d.owner.GID); err != nil {
		n.Discard()
		return nil, &os.PathError{Op: "fchown", Path: d.join(rel), Err: err}
	}
	if err := unix.Fchmod(fd, mode); err != nil {
		n.Discard()
		return nil, &os.PathError{Op: "fchmod", Path: d.join(rel), Err: err}
	}
	return n, nil
}

// Remove unlinks the file (or, with dir, the empty directory) name in d.
func (d *Dir) Remove(name string, dir bool) error {
	if err := d.checkRel(name); err != nil {
		return err
	}
	if strings.Contains(name, "/") {
		return refuse(d.join(name), "must be a single name")
	}
	flags := 0
	if dir {
		flags = unix.AT_REMOVEDIR
	}
	if err := unix.Unlinkat(d.Fd(), name, flags); err != nil {
		return &os.PathError{Op: "unlink", Path: d.join(name), Err: err}
	}
	return nil
}

// Chmod sets the mode of the file behind f, which may be an O_PATH
// descriptor (through /proc/self/fd, which needs no open of the file).
func Chmod(f *os.File, mode uint32) error {
	if err := unix.Fchmodat(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", f.Fd()), mode, 0); err != nil {
		return &os.PathError{Op: "chmod", Path: f.Name(), Err: err}
	}
	return nil
}

// Chown sets the owner of the file behind f, which may be an O_PATH
// descriptor.
func Chown(f *os.File, uid, gid int) error {
	if err := unix.Fchownat(int(f.Fd()), "", uid, gid, unix.AT_EMPTY_PATH); err != nil {
		return &os.PathError{Op: "chown", Path: f.Name(), Err: err}
	}
	return nil
}
