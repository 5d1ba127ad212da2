// Package tarcopy is `banger vm cp`'s tar stream: Write archives a file or
// tree (symlinks as symlinks, modes, mtimes, owners, hard links), and
// Extract unpacks one beneath a destination directory through an os.Root,
// so no entry (`..`, an absolute name, a path through a symlink, a hard
// link) can write outside it. Resolve applies docker cp's rules for where
// a copy lands. The guest agent and the CLI share it.
package tarcopy

import (
	"archive/tar"
	"context"
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
)

// ContentsOnly is the first entry's name when the source ends in "/.":
// docker cp then copies the directory's contents, not the directory.
const ContentsOnly = "."

// SourceName is the name a source path's tree has in the archive: its base
// name, or ContentsOnly for "dir/.".
func SourceName(src string) string {
	if src == "." || strings.HasSuffix(src, "/.") {
		return ContentsOnly
	}
	b := filepath.Base(filepath.Clean(src))
	if b == "/" {
		return ContentsOnly
	}
	return b
}

// Write writes a tar of the file or tree at src to w. Entries are named
// SourceName(src) and below it; a final symlink in src is archived as a
// link, not followed, unless src ends in "/" or "/.". Sockets and device files are left out. It stops at
// the first error (the archive is then incomplete) or when ctx is done.
func Write(ctx context.Context, w io.Writer, src string) error {
	tw := tar.NewWriter(w)
	root := filepath.Clean(src)
	if root != "/" && (strings.HasSuffix(src, "/") || strings.HasSuffix(src, "/.")) {
		root += "/." // "link/" and "link/." archive the directory a symlink names
	}
	base := SourceName(src)
	if _, err := os.Lstat(root); err != nil {
		return err
	}
	links := map[[2]uint64]string{}
	buf := make([]byte, 256<<10)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		name := base
		if rel != "." {
			name = path.Join(base, filepath.ToSlash(rel))
			if base == ContentsOnly {
				name = "./" + filepath.ToSlash(rel)
			}
		}
		return writeEntry(tw, p, name, links, buf)
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

func writeEntry(tw *tar.Writer, p, name string, links map[[2]uint64]string, buf []byte) error {
	fi, err := os.Lstat(p)
	if err != nil {
		return err
	}
	mode := fi.Mode()
	if mode&(fs.ModeSocket|fs.ModeDevice|fs.ModeCharDevice|fs.ModeNamedPipe|fs.ModeIrregular) != 0 {
		return nil
	}
	var target string
	if mode&fs.ModeSymlink != 0 {
		if target, err = os.Readlink(p); err != nil {
			return err
		}
	}
	hdr, err := tar.FileInfoHeader(fi, target)
	if err != nil {
		return fmt.Errorf("archiving %s: %w", p, err)
	}
	hdr.Name = name
	if fi.IsDir() && name != ContentsOnly {
		hdr.Name += "/"
	}
	hdr.Format = tar.FormatPAX // keeps sub-second mtimes
	hdr.AccessTime, hdr.ChangeTime = time.Time{}, time.Time{}
	hdr.Uname, hdr.Gname = "", "" // numeric owners, as docker cp
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && mode.IsRegular() && st.Nlink > 1 {
		key := [2]uint64{uint64(st.Dev), st.Ino}
		if first, seen := links[key]; seen {
			hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
			return tw.WriteHeader(hdr)
		}
		links[key] = name
	}
	if !mode.IsRegular() {
		return tw.WriteHeader(hdr)
	}
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	n, err := io.CopyBuffer(tw, struct{ io.Reader }{f}, buf)
	if err != nil {
		return fmt.Errorf("archiving %s: %w", p, err)
	}
	if n != hdr.Size {
		return fmt.Errorf("archiving %s: it changed size while being copied", p)
	}
	return nil
}

// IsNotExist reports whether err means the source does not exist.
func IsNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
