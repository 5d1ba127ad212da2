// Filesystem helpers for the storage ops: ext4 superblock, growing, sparse copies.

package hostops

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"banger/internal/command"
	"banger/internal/ext4"
)

func treeBytes(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		n += fi.Size() + 4096
		return nil
	})
	return n, err
}

// runInput is Run with stdin.
func runInput(ctx context.Context, stdin, name string, args ...string) ([]byte, error) {
	return command.RunInput(ctx, stdin, name, args...)
}

// ErrNotExt4 marks a file without an ext2/3/4 superblock.
var ErrNotExt4 = ext4.ErrNotExt4

// Ext4Bytes checks the ext4 superblock of r and returns the filesystem's
// size in bytes (ext4.Bytes).
func Ext4Bytes(r io.ReaderAt) (int64, error) { return ext4.Bytes(r) }

// GrowFS grows the ext4 filesystem at path to fill its file or device
// (ext4.GrowFS). Runs as the current process.
func GrowFS(ctx context.Context, path string) (bool, error) { return ext4.GrowFS(ctx, path) }

// CopySparse copies src into dst (both open, dst empty): a FICLONE reflink
// when the filesystem can, else only src's data extents, leaving holes.
func CopySparse(ctx context.Context, dst, src *os.File) error {
	if unix.IoctlFileClone(int(dst.Fd()), int(src.Fd())) == nil {
		return nil
	}
	fi, err := src.Stat()
	if err != nil {
		return err
	}
	size := fi.Size()
	sfd, dfd := int(src.Fd()), int(dst.Fd())
	for off := int64(0); off < size; {
		data, err := unix.Seek(sfd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break
		}
		if err != nil {
			return fmt.Errorf("seeking data in %s: %w", src.Name(), err)
		}
		hole, err := unix.Seek(sfd, data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("seeking hole in %s: %w", src.Name(), err)
		}
		for data < hole {
			if err := ctx.Err(); err != nil {
				return err
			}
			roff, woff := data, data
			n, err := unix.CopyFileRange(sfd, &roff, dfd, &woff, int(min(hole-data, 64<<20)), 0)
			if err != nil && (errors.Is(err, unix.EXDEV) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL)) {
				n, err = copyRange(dst, src, data, min(hole-data, 64<<20))
			}
			if err != nil {
				return err
			}
			if n == 0 {
				return fmt.Errorf("copying %s: unexpected end of file at %d", src.Name(), data)
			}
			data += int64(n)
		}
		off = hole
	}
	return dst.Truncate(size)
}

func copyRange(dst, src *os.File, off, n int64) (int, error) {
	w, err := io.Copy(io.NewOffsetWriter(dst, off), io.NewSectionReader(src, off, n))
	return int(w), err
}
