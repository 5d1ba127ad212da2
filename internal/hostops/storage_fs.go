// Filesystem helpers for the storage ops: ext4 superblock, growing, sparse copies.

package hostops

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
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
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := trim(stderr.String())
		if msg == "" {
			msg = err.Error()
		}
		return stdout.Bytes(), fmt.Errorf("%s %s: %s", name, strings.Join(args, " "), msg)
	}
	return stdout.Bytes(), nil
}

// ErrNotExt4 marks a file without an ext2/3/4 superblock.
var ErrNotExt4 = errors.New("not an ext4 filesystem (no 0xEF53 magic at offset 1080)")

// Ext4Bytes checks the ext4 superblock of r and returns the filesystem's
// size in bytes.
func Ext4Bytes(r io.ReaderAt) (int64, error) {
	sb := make([]byte, 1024)
	if _, err := r.ReadAt(sb, 1024); err != nil {
		if errors.Is(err, io.EOF) {
			return 0, ErrNotExt4
		}
		return 0, fmt.Errorf("reading superblock: %w", err)
	}
	if binary.LittleEndian.Uint16(sb[56:]) != 0xEF53 {
		return 0, ErrNotExt4
	}
	blocks := uint64(binary.LittleEndian.Uint32(sb[4:]))
	if binary.LittleEndian.Uint32(sb[96:])&0x80 != 0 { // INCOMPAT_64BIT
		blocks |= uint64(binary.LittleEndian.Uint32(sb[336:])) << 32
	}
	logBS := binary.LittleEndian.Uint32(sb[24:])
	if logBS > 6 {
		return 0, fmt.Errorf("bad block size in superblock")
	}
	return int64(blocks) << (10 + logBS), nil
}

// GrowFS grows the ext4 filesystem at path to fill its file or device,
// after e2fsck -f; it reports whether it grew. Runs as the current process.
func GrowFS(ctx context.Context, path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, fmt.Errorf("opening %s: %w", path, err)
	}
	fsBytes, err := Ext4Bytes(f)
	var size int64
	if err == nil {
		size, err = f.Seek(0, io.SeekEnd)
	}
	f.Close()
	if err != nil {
		return false, fmt.Errorf("%s: %w", path, err)
	}
	if size < fsBytes {
		return false, fmt.Errorf("%s is %d bytes, smaller than its %d-byte filesystem", path, size, fsBytes)
	}
	if size-fsBytes < 4096 {
		return false, nil
	}
	// e2fsck: 0 clean, 1 and 2 errors corrected, anything higher failed.
	cmd := exec.CommandContext(ctx, "e2fsck", "-f", "-y", path)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && ee.ExitCode() <= 2) {
		return false, fmt.Errorf("e2fsck -f -y %s: %s: %w", path, trim(string(out)), err)
	}
	if _, err := Run(ctx, "resize2fs", path); err != nil {
		return false, err
	}
	return true, nil
}

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
