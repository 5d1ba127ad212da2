// Package beneath is how banger's privileged ops touch a user's files.
//
// A privileged op runs as root on paths named by a user it does not trust,
// and that user can change the paths while the op runs: swap a parent
// directory for a symlink (renameat2 RENAME_EXCHANGE), replace the final
// component with a symlink, a hard link to a root-owned file or a FIFO. A
// path string checked first and used later loses that race. So an op
//
//   - opens each of the user's directories once, as a descriptor, walking
//     from "/" without following a symlink in any component, and checks it
//     is a real directory the user owns (OpenRoot, EnsureRoot);
//   - reaches everything beneath it with openat2(RESOLVE_BENEATH |
//     RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV), so a
//     symlink, a ".." or a mount point anywhere below is refused by the
//     kernel at the moment of use;
//   - acts only through descriptors: mkdirat, fchown, fchmod, fstat,
//     unlinkat relative to a directory descriptor it holds;
//   - before consuming a file, checks with fstat on an O_PATH descriptor
//     (which opens nothing: a FIFO cannot hang it, a device is not opened)
//     that the user owns it, that it is a regular file and that it has one
//     link, and only then opens that same inode through /proc/self/fd;
//   - creates files the user will own with O_CREAT|O_EXCL|O_NOFOLLOW and
//     hands them over with fchown on the new descriptor.
//
// Tools that need a path get /proc/self/fd/N (or /dev/fd/3 for a child
// with the file in ExtraFiles) of a descriptor opened here.
//
// Every refusal wraps ErrRefused and names the path and the reason; other
// failures wrap the errno (errors.Is(err, fs.ErrNotExist) works).
package beneath

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrRefused marks a path or file banger will not touch for its user.
var ErrRefused = errors.New("refused")

// Error is a refusal: the path and why.
type Error struct {
	Path   string
	Reason string
}

func (e *Error) Error() string { return e.Path + ": " + e.Reason }

// Unwrap makes errors.Is(err, ErrRefused) hold.
func (e *Error) Unwrap() error { return ErrRefused }

func refuse(path, format string, args ...any) error {
	return &Error{Path: path, Reason: fmt.Sprintf(format, args...)}
}

// resolveBeneath is how every path below a directory descriptor is
// resolved: never above it, through no symlink (magic or not) and across
// no mount point.
const resolveBeneath = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV

// fuseMagic is FUSE's statfs type: a filesystem the user serves, which
// can report any owner and block root indefinitely.
const fuseMagic = 0x65735546

// Owner is whom a directory belongs to: everything consumed beneath it must
// be owned by UID, and everything created beneath it is handed to UID:GID.
type Owner struct {
	UID int
	GID int
}

// Dir is an open directory that paths are resolved beneath.
type Dir struct {
	f     *os.File
	path  string // absolute path it was opened at, for messages and Rel
	owner Owner
}

// Path is the absolute path the directory was opened at.
func (d *Dir) Path() string { return d.path }

// Owner is the directory's owner.
func (d *Dir) Owner() Owner { return d.owner }

// Fd is the directory's descriptor.
func (d *Dir) Fd() int { return int(d.f.Fd()) }

// Close closes the directory descriptor.
func (d *Dir) Close() error { return d.f.Close() }

// NewDir wraps an open directory that is trusted as a whole (a root-owned
// staging tree): paths beneath it are still resolved with resolveBeneath,
// and files consumed beneath it must be owned by o.UID.
func NewDir(f *os.File, path string, o Owner) (*Dir, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, &os.PathError{Op: "fstat", Path: path, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return nil, refuse(path, "is not a directory")
	}
	return &Dir{f: f, path: path, owner: o}, nil
}

// OpenRoot opens dir, an absolute path, as a root: every component is
// opened without following a symlink, and dir itself must be a directory
// owned by o.UID that is not on a FUSE filesystem.
func OpenRoot(dir string, o Owner) (*Dir, error) { return openRoot(dir, o, false) }

// EnsureRoot is OpenRoot that first creates the missing trailing
// components of dir (mode 0700, handed to o) when the deepest existing one
// is a directory o.UID owns (any directory when o.UID is 0).
func EnsureRoot(dir string, o Owner) (*Dir, error) { return openRoot(dir, o, true) }

func openRoot(dir string, o Owner, create bool) (*Dir, error) {
	if !filepath.IsAbs(dir) {
		return nil, refuse(dir, "must be an absolute path")
	}
	if hasDotDot(dir) {
		return nil, refuse(dir, "contains \"..\"")
	}
	clean := filepath.Clean(dir)
	if clean == "/" {
		return nil, refuse(dir, "/ cannot be a user's directory")
	}
	fd, err := unix.Open("/", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: "/", Err: err}
	}
	cur := "/"
	for _, comp := range strings.Split(clean[1:], "/") {
		next := filepath.Join(cur, comp)
		nfd, err := openat2(fd, comp, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0,
			unix.RESOLVE_BENEATH|unix.RESOLVE_NO_SYMLINKS|unix.RESOLVE_NO_MAGICLINKS)
		if errors.Is(err, unix.ENOENT) && create {
			nfd, err = mkdirOwned(fd, cur, comp, 0o700, o)
		}
		err = symlinkOrNotDir(fd, comp, err)
		unix.Close(fd)
		if err != nil {
			return nil, pathErr("open", next, err)
		}
		fd, cur = nfd, next
	}
	f := os.NewFile(uintptr(fd), clean)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, &os.PathError{Op: "fstat", Path: clean, Err: err}
	}
	if int(st.Uid) != o.UID {
		f.Close()
		return nil, refuse(clean, "is owned by uid %d, not %d; banger works only in directories its user owns", st.Uid, o.UID)
	}
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(fd, &sfs); err == nil && sfs.Type == fuseMagic {
		f.Close()
		return nil, refuse(clean, "is on a FUSE filesystem, which can report any owner; use a directory on a local filesystem")
	}
	return &Dir{f: f, path: clean, owner: o}, nil
}

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

// Rel returns p, an absolute path, relative to d, refusing a path with a
// ".." component or not strictly beneath d. It is only a lexical check for
// clear messages; resolution beneath d is what enforces it.
func (d *Dir) Rel(p string) (string, error) {
	if !filepath.IsAbs(p) {
		return "", refuse(p, "must be an absolute path")
	}
	if hasDotDot(p) {
		return "", refuse(p, "contains \"..\"")
	}
	rel, ok := strings.CutPrefix(filepath.Clean(p), d.path+"/")
	if !ok || rel == "" {
		return "", refuse(p, "is not beneath %s", d.path)
	}
	return rel, nil
}

// Within reports whether p lies strictly beneath dir, lexically.
func Within(dir, p string) bool {
	if !filepath.IsAbs(p) || hasDotDot(p) {
		return false
	}
	rel, ok := strings.CutPrefix(filepath.Clean(p), filepath.Clean(dir)+"/")
	return ok && rel != ""
}

func hasDotDot(p string) bool {
	for _, c := range strings.Split(p, "/") {
		if c == ".." {
			return true
		}
	}
	return false
}

// checkRel refuses relative paths that are empty, absolute or have ".",
// ".." or empty components.
func (d *Dir) checkRel(rel string) error {
	if rel == "" || strings.HasPrefix(rel, "/") {
		return refuse(d.join(rel), "must be a relative path beneath %s", d.path)
	}
	for _, c := range strings.Split(rel, "/") {
		if c == "" || c == "." || c == ".." {
			return refuse(d.join(rel), "must not contain %q components", c)
		}
	}
	return nil
}

func (d *Dir) join(rel string) string { return d.path + "/" + rel }

// Lookup opens rel beneath d with O_PATH (nothing is opened: no FIFO
// blocks, no device sees an open) and returns it with its fstat. A symlink
// on the way is refused; a trailing one is returned as itself (S_IFLNK).
// It checks nothing else about the result; Open and OpenDir do.
func (d *Dir) Lookup(rel string) (*os.File, unix.Stat_t, error) {
	var st unix.Stat_t
	if err := d.checkRel(rel); err != nil {
		return nil, st, err
	}
	fd, err := openat2(d.Fd(), rel, unix.O_PATH|unix.O_NOFOLLOW, 0, resolveBeneath)
	if err != nil {
		return nil, st, pathErr("open", d.join(rel), err)
	}
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, st, &os.PathError{Op: "fstat", Path: d.join(rel), Err: err}
	}
	return os.NewFile(uintptr(fd), d.join(rel)), st, nil
}

// CheckFile refuses st unless it is a regular file owned by o.UID with one
// link (a second link could be a hard link to someone else's file).
func CheckFile(path string, st unix.Stat_t, o Owner) error {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
	case unix.S_IFIFO:
		return refuse(path, "is a FIFO, not a regular file")
	case unix.S_IFCHR, unix.S_IFBLK:
		return refuse(path, "is a device node, not a regular file")
	case unix.S_IFDIR:
		return refuse(path, "is a directory, not a regular file")
	case unix.S_IFLNK:
		return refuse(path, "is a symlink; banger follows no symlinks in its directories")
	default:
		return refuse(path, "is not a regular file (mode %07o)", st.Mode)
	}
	if st.Nlink != 1 {
		return refuse(path, "has %d links; banger uses only files with one (a hard link can point at another user's file)", st.Nlink)
	}
	if int(st.Uid) != o.UID {
		return refuse(path, "is owned by uid %d, not %d", st.Uid, o.UID)
	}
	return nil
}

// Open opens the regular file rel beneath d after checking (CheckFile)
// that d's owner owns it and that it has one link. flag is O_RDONLY,
// O_WRONLY or O_RDWR, optionally with O_TRUNC or O_APPEND; with O_PATH the
// checked O_PATH descriptor itself is returned.
func (d *Dir) Open(rel string, flag int) (*os.File, error) {
	pf, st, err := d.Lookup(rel)
	if err != nil {
		return nil, err
	}
	if err := CheckFile(pf.Name(), st, d.owner); err != nil {
		pf.Close()
		return nil, err
	}
	if flag&unix.O_PATH != 0 {
		return pf, nil
	}
	defer pf.Close()
	return Reopen(pf, flag)
}

// Reopen opens the inode behind the O_PATH descriptor pf anew with flag,
// through /proc/self/fd, and checks it is the same inode.
func Reopen(pf *os.File, flag int) (*os.File, error) {
	var want unix.Stat_t
	if err := unix.Fstat(int(pf.Fd()), &want); err != nil {
		return nil, &os.PathError{Op: "fstat", Path: pf.Name(), Err: err}
	}
	fd, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", pf.Fd()), flag|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: pf.Name(), Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Dev != want.Dev || st.Ino != want.Ino {
		unix.Close(fd)
		return nil, refuse(pf.Name(), "changed while being opened")
	}
	return os.NewFile(uintptr(fd), pf.Name()), nil
}

// OpenDir opens the directory rel beneath d; it must be owned by d's owner.
func (d *Dir) OpenDir(rel string) (*Dir, error) {
	if err := d.checkRel(rel); err != nil {
		return nil, err
	}
	fd, err := openat2(d.Fd(), rel, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0, resolveBeneath)
	if err != nil {
		return nil, pathErr("open", d.join(rel), symlinkOrNotDir(d.Fd(), rel, err))
	}
	sub := &Dir{f: os.NewFile(uintptr(fd), d.join(rel)), path: d.join(rel), owner: d.owner}
	if err := sub.checkOwned(); err != nil {
		sub.Close()
		return nil, err
	}
	return sub, nil
}

func (d *Dir) checkOwned() error {
	var st unix.Stat_t
	if err := unix.Fstat(d.Fd(), &st); err != nil {
		return &os.PathError{Op: "fstat", Path: d.path, Err: err}
	}
	if int(st.Uid) != d.owner.UID {
		return refuse(d.path, "is owned by uid %d, not %d", st.Uid, d.owner.UID)
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

// Entry is one directory entry, as fstatat (no symlink followed) sees it.
type Entry struct {
	Name string
	Stat unix.Stat_t
}

// Type is the entry's file type bits (unix.S_IFREG, S_IFDIR, ...).
func (e Entry) Type() uint32 { return e.Stat.Mode & unix.S_IFMT }

// Entries lists d's entries, read from its descriptor, sorted by name.
// An entry removed while listing is skipped.
func (d *Dir) Entries() ([]Entry, error) {
	fd, err := unix.Dup(d.Fd())
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), d.path)
	defer f.Close()
	if _, err := f.Seek(0, 0); err != nil {
		return nil, &os.PathError{Op: "seek", Path: d.path, Err: err}
	}
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, &os.PathError{Op: "readdir", Path: d.path, Err: err}
	}
	out := make([]Entry, 0, len(names))
	for _, n := range names {
		var st unix.Stat_t
		if err := unix.Fstatat(d.Fd(), n, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			continue
		}
		out = append(out, Entry{Name: n, Stat: st})
	}
	slices.SortFunc(out, func(a, b Entry) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
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

// openat2 retries the transient EAGAIN/EINTR that a concurrent rename can
// cause during a RESOLVE_BENEATH resolution.
func openat2(dirfd int, path string, flags int, mode uint32, resolve uint64) (int, error) {
	how := unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Mode: uint64(mode), Resolve: resolve}
	for try := 0; ; try++ {
		fd, err := unix.Openat2(dirfd, path, &how)
		if (errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR)) && try < 100 {
			continue
		}
		return fd, err
	}
}

// symlinkOrNotDir tells, for an O_DIRECTORY|O_NOFOLLOW open that failed
// with ENOTDIR, whether rel is a symlink (ELOOP then, as for any other
// symlink on the way) or something else that is not a directory.
func symlinkOrNotDir(dirfd int, rel string, err error) error {
	if !errors.Is(err, unix.ENOTDIR) {
		return err
	}
	// O_PATH|O_NOFOLLOW opens a trailing symlink itself.
	fd, lerr := openat2(dirfd, rel, unix.O_PATH|unix.O_NOFOLLOW, 0, resolveBeneath)
	if errors.Is(lerr, unix.ELOOP) {
		return lerr
	}
	if lerr != nil {
		return err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if unix.Fstat(fd, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
		return unix.ELOOP
	}
	return err
}

// pathErr turns what openat2's resolution refuses into a refusal naming
// path, and anything else into an *os.PathError.
func pathErr(op, path string, err error) error {
	var be *Error
	switch {
	case errors.As(err, &be):
		return err
	case errors.Is(err, unix.ELOOP):
		return refuse(path, "is a symlink or has one in its path; banger follows no symlinks in its directories")
	case errors.Is(err, unix.EXDEV):
		return refuse(path, "leaves its directory or crosses a mount point")
	case errors.Is(err, unix.ENOTDIR):
		return refuse(path, "is not a directory, or has a component that is not one")
	case errors.Is(err, unix.EEXIST):
		return &os.PathError{Op: op, Path: path, Err: fs.ErrExist}
	}
	return &os.PathError{Op: op, Path: path, Err: err}
}
