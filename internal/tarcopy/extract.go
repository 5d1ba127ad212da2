package tarcopy

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// UserError is a refusal the user can act on (no such destination, a
// directory onto a file, a hostile entry); callers show it as is.
type UserError struct{ Msg string }

func (e *UserError) Error() string { return e.Msg }

func userErrorf(format string, args ...any) error {
	return &UserError{Msg: fmt.Sprintf(format, args...)}
}

// Target is where an archive lands: entries are extracted beneath Dir, with
// the archive's top-level name replaced by Rename ("" keeps names as they
// are; ContentsOnly drops the top level).
type Target struct {
	Dir    string
	Rename string
}

// Resolve applies docker cp's rules to a destination dst (as the user
// wrote it, a trailing slash included) for a source whose archive name is
// srcName (SourceName) and which is a directory or not:
//   - dst is a directory: the source goes inside it (its contents for
//     "dir/.");
//   - dst is a file: a file replaces it, a directory is refused;
//   - dst does not exist: its parent must, and the source takes its name
//     (a trailing slash then needs a directory source).
func Resolve(dst, srcName string, srcIsDir bool) (Target, error) {
	slash := strings.HasSuffix(dst, "/") || strings.HasSuffix(dst, "/.")
	clean := filepath.Clean(dst)
	st, err := os.Stat(clean)
	switch {
	case err == nil && st.IsDir():
		if srcName == ContentsOnly {
			return Target{Dir: clean, Rename: ContentsOnly}, nil
		}
		return Target{Dir: clean, Rename: srcName}, nil
	case err == nil:
		if srcIsDir {
			return Target{}, userErrorf("cannot copy a directory onto the file %s", clean)
		}
		if slash {
			return Target{}, userErrorf("%s is not a directory", clean)
		}
		return Target{Dir: filepath.Dir(clean), Rename: filepath.Base(clean)}, nil
	case errors.Is(err, fs.ErrNotExist):
		if slash && !srcIsDir {
			return Target{}, userErrorf("directory %s does not exist", clean)
		}
		parent := filepath.Dir(clean)
		pst, perr := os.Stat(parent)
		if perr != nil || !pst.IsDir() {
			return Target{}, userErrorf("%s does not exist (its parent %s must be an existing directory)", clean, parent)
		}
		return Target{Dir: parent, Rename: filepath.Base(clean)}, nil
	default:
		return Target{}, userErrorf("%s: %s", clean, errText(err))
	}
}

// errText is an os error without the operation and path os puts in front.
func errText(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		return le.Err.Error()
	}
	return err.Error()
}

// Options tune Extract.
type Options struct {
	// Owners sets entries' numeric owners (needs root). Default: off.
	Owners bool
}

// Extract unpacks the tar on r beneath t.Dir. It returns the number of
// content bytes written. Names with ".." or a leading "/" are refused, and
// every path resolves through an os.Root: a symlink in the archive or the
// destination that points outside is never followed out, nor is a hard link
// made to a file outside. Existing files and symlinks are replaced (never
// written through), existing directories kept. Directory modes and mtimes
// are applied last.
func Extract(r io.Reader, t Target, opts Options) (int64, error) {
	root, err := os.OpenRoot(t.Dir)
	if err != nil {
		return 0, userErrorf("opening destination %s: %s", t.Dir, errText(err))
	}
	defer root.Close()
	x := &extractor{root: root, opts: opts, rename: t.Rename, first: true, buf: make([]byte, 256<<10)}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return x.n, fmt.Errorf("reading the archive: %w", err)
		}
		if err := x.entry(hdr, tr); err != nil {
			return x.n, err
		}
	}
	return x.n, x.finishDirs()
}

type extractor struct {
	root   *os.Root
	opts   Options
	rename string
	buf    []byte
	n      int64
	dirs   []*tar.Header // with Name mapped
	// first: no entry seen yet; dotRooted: the first entry was ".".
	first, dotRooted bool
}

// mapName validates an archive name and maps it to a path beneath the root.
func (x *extractor) mapName(name string) (string, error) {
	if name == "" {
		return "", userErrorf("archive entry with an empty name")
	}
	if strings.HasPrefix(name, "/") {
		return "", userErrorf("archive entry %q has an absolute name", name)
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", userErrorf("archive entry %q leaves the destination (..)", name)
		}
	}
	clean := path.Clean(name)
	if x.first {
		// An archive whose top entry is "." (Write of "dir/.", or `tar -C
		// dir -c .`) holds the top's contents: its names are relative to it.
		x.first, x.dotRooted = false, clean == "."
	}
	if x.rename == "" {
		return clean, nil
	}
	top := x.rename
	if top == ContentsOnly {
		top = "."
	}
	if x.dotRooted {
		return path.Join(top, clean), nil
	}
	_, rest, _ := strings.Cut(clean, "/")
	return path.Join(top, rest), nil
}

func (x *extractor) entry(hdr *tar.Header, body io.Reader) error {
	name, err := x.mapName(hdr.Name)
	if err != nil {
		return err
	}
	mode := hdr.FileInfo().Mode()
	perm := mode & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := x.mkdir(name); err != nil {
			return err
		}
		if name != "." {
			h := *hdr
			h.Name = name
			x.dirs = append(x.dirs, &h)
		}
		return nil
	case tar.TypeReg, tar.TypeRegA:
		if err := x.parent(name); err != nil {
			return err
		}
		if err := x.clear(name); err != nil {
			return err
		}
		f, err := x.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return x.failf(name, "creating", err)
		}
		n, err := io.CopyBuffer(struct{ io.Writer }{f}, struct{ io.Reader }{body}, x.buf)
		x.n += n
		if err == nil && x.opts.Owners {
			err = f.Chown(hdr.Uid, hdr.Gid)
		}
		if err == nil {
			err = f.Chmod(perm) // after chown, which clears setuid
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return x.failf(name, "writing", err)
		}
		if err := x.root.Chtimes(name, time.Time{}, hdr.ModTime); err != nil {
			return x.failf(name, "setting the mtime of", err)
		}
		return nil
	case tar.TypeSymlink:
		if err := x.parent(name); err != nil {
			return err
		}
		if err := x.clear(name); err != nil {
			return err
		}
		if err := x.root.Symlink(hdr.Linkname, name); err != nil {
			return x.failf(name, "creating the symlink", err)
		}
		if x.opts.Owners {
			if err := x.root.Lchown(name, hdr.Uid, hdr.Gid); err != nil {
				return x.failf(name, "setting the owner of", err)
			}
		}
		return x.lutimes(name, hdr.ModTime)
	case tar.TypeLink:
		old, err := x.mapName(hdr.Linkname)
		if err != nil {
			return err
		}
		if err := x.parent(name); err != nil {
			return err
		}
		if err := x.clear(name); err != nil {
			return err
		}
		if err := x.root.Link(old, name); err != nil {
			return x.failf(name, "creating the hard link", err)
		}
		return nil
	}
	// Devices, fifos and extended headers: not copied.
	return nil
}

// failf wraps an os error on name; escaping the root is the user's (the
// archive's) fault.
func (x *extractor) failf(name, doing string, err error) error {
	if strings.Contains(err.Error(), "escapes") {
		return userErrorf("archive entry %q leads outside the destination through a symlink; refused", name)
	}
	return fmt.Errorf("%s %s: %s", doing, name, errText(err))
}

func (x *extractor) mkdir(name string) error {
	if name == "." {
		return nil
	}
	if err := x.parent(name); err != nil {
		return err
	}
	err := x.root.Mkdir(name, 0o700)
	if errors.Is(err, fs.ErrExist) {
		fi, lerr := x.root.Lstat(name)
		if lerr == nil && fi.IsDir() {
			return nil
		}
		return userErrorf("cannot replace %s with a directory: it exists and is not one", name)
	}
	if err != nil {
		return x.failf(name, "creating the directory", err)
	}
	return nil
}

// parent makes name's parent directories (for archives without directory
// entries).
func (x *extractor) parent(name string) error {
	dir := path.Dir(name)
	if dir == "." {
		return nil
	}
	if err := x.root.MkdirAll(dir, 0o755); err != nil {
		return x.failf(name, "creating the parent of", err)
	}
	return nil
}

// clear removes a non-directory at name so the entry replaces it rather
// than writing through it.
func (x *extractor) clear(name string) error {
	fi, err := x.root.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return x.failf(name, "looking at", err)
	}
	if fi.IsDir() {
		return userErrorf("cannot replace the directory %s with a non-directory", name)
	}
	if err := x.root.Remove(name); err != nil {
		return x.failf(name, "replacing", err)
	}
	return nil
}

// lutimes sets a symlink's own mtime: through its parent opened beneath
// the root, then utimensat on the last component without following it.
func (x *extractor) lutimes(name string, mtime time.Time) error {
	dir, err := x.root.Open(path.Dir(name))
	if err != nil {
		return x.failf(name, "opening the directory of", err)
	}
	defer dir.Close()
	ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, unix.NsecToTimespec(mtime.UnixNano())}
	if err := unix.UtimesNanoAt(int(dir.Fd()), path.Base(name), ts, unix.AT_SYMLINK_NOFOLLOW); err != nil && !errors.Is(err, syscall.EOPNOTSUPP) {
		return fmt.Errorf("setting the mtime of %s: %w", name, err)
	}
	return nil
}

// finishDirs applies directories' owners, modes and mtimes, deepest first
// (writing children would move a parent's mtime, and a read-only mode
// would stop them being written).
func (x *extractor) finishDirs() error {
	for i := len(x.dirs) - 1; i >= 0; i-- {
		h := x.dirs[i]
		mode := h.FileInfo().Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
		if x.opts.Owners {
			if err := x.root.Lchown(h.Name, h.Uid, h.Gid); err != nil {
				return x.failf(h.Name, "setting the owner of", err)
			}
		}
		if err := x.root.Chmod(h.Name, mode); err != nil {
			return x.failf(h.Name, "setting the mode of", err)
		}
		if err := x.root.Chtimes(h.Name, time.Time{}, h.ModTime); err != nil {
			return x.failf(h.Name, "setting the mtime of", err)
		}
	}
	return nil
}

// Peek reads the archive's first header (the source's top entry) and
// returns it with a reader that replays the whole archive from the start.
func Peek(r io.Reader) (*tar.Header, io.Reader, error) {
	var seen bytes.Buffer
	hdr, err := tar.NewReader(io.TeeReader(r, &seen)).Next()
	if errors.Is(err, io.EOF) {
		return nil, nil, userErrorf("the archive is empty")
	}
	if err != nil {
		return nil, nil, fmt.Errorf("reading the archive: %w", err)
	}
	return hdr, io.MultiReader(&seen, r), nil
}

// TopName is the source name an archive's first header stands for: its
// first path component, or ContentsOnly for ".".
func TopName(hdr *tar.Header) string {
	first, _, _ := strings.Cut(path.Clean(hdr.Name), "/")
	return first
}
