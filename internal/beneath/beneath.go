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

// checkFile refuses st unless it is a regular file owned by o.UID with one
// link (a second link could be a hard link to someone else's file).
func checkFile(path string, st unix.Stat_t, o Owner) error {
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

// Open opens the regular file rel beneath d after checking (checkFile)
// that d's owner owns it and that it has one link. flag is O_RDONLY,
// O_WRONLY or O_RDWR, optionally with O_TRUNC or O_APPEND; with O_PATH the
// checked O_PATH descriptor itself is returned.
func (d *Dir) Open(rel string, flag int) (*os.File, error) {
	pf, st, err := d.Lookup(rel)
	if err != nil {
		return nil, err
	}
	if err := checkFile(pf.Name(), st, d.owner); err != nil {
		pf.Close()
		return nil, err
	}
	if flag&unix.O_PATH != 0 {
		return pf, nil
	}
	defer pf.Close()
	return reopen(pf, flag)
}

// reopen opens the inode behind the O_PATH descriptor pf anew with flag,
// through /proc/self/fd, and checks it is the same inode.
func reopen(pf *os.File, flag int) (*os.File, error) {
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
