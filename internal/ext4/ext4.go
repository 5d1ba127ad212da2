// Package ext4 is banger's userspace work on ext4 images: superblock
// checks, growing, and repairs done with e2fsprogs (debugfs, e2fsck,
// resize2fs) on the image file, as the current process. Nothing here
// mounts a filesystem: a user's image never reaches the host kernel's ext4
// driver.
package ext4

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"banger/internal/command"
)

// ErrNotExt4 marks a file without an ext2/3/4 superblock.
var ErrNotExt4 = errors.New("not an ext4 filesystem (no 0xEF53 magic at offset 1080)")

// Bytes checks the ext4 superblock of r and returns the filesystem's size
// in bytes.
func Bytes(r io.ReaderAt) (int64, error) {
	sb, err := readSuper(r)
	if err != nil {
		return 0, err
	}
	return int64(sb.blocks) * sb.blockSize, nil
}

// super is what banger reads from a superblock.
type super struct {
	blocks    uint64
	blockSize int64
}

func readSuper(r io.ReaderAt) (super, error) {
	sb := make([]byte, 1024)
	if _, err := r.ReadAt(sb, 1024); err != nil {
		if errors.Is(err, io.EOF) {
			return super{}, ErrNotExt4
		}
		return super{}, fmt.Errorf("reading superblock: %w", err)
	}
	if binary.LittleEndian.Uint16(sb[56:]) != 0xEF53 {
		return super{}, ErrNotExt4
	}
	blocks := uint64(binary.LittleEndian.Uint32(sb[4:]))
	if binary.LittleEndian.Uint32(sb[96:])&0x80 != 0 { // INCOMPAT_64BIT
		blocks |= uint64(binary.LittleEndian.Uint32(sb[336:])) << 32
	}
	logBS := binary.LittleEndian.Uint32(sb[24:])
	if logBS > 6 {
		return super{}, fmt.Errorf("bad block size in superblock")
	}
	return super{blocks: blocks, blockSize: 1024 << logBS}, nil
}

// GrowFS grows the ext4 filesystem at path to fill its file or device,
// after e2fsck -f; it reports whether it grew. Runs as the current process.
func GrowFS(ctx context.Context, path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, fmt.Errorf("opening %s: %w", path, err)
	}
	fsBytes, err := Bytes(f)
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
	if err := Fsck(ctx, path); err != nil {
		return false, err
	}
	if _, err := command.Run(ctx, "resize2fs", path); err != nil {
		return false, err
	}
	return true, nil
}

// Fsck runs `e2fsck -f -y` on path: exit 0 is clean, 1 and 2 are errors
// corrected, anything higher (or no e2fsck) fails.
func Fsck(ctx context.Context, path string) error {
	_, err := command.Combined(ctx, "e2fsck", "-f", "-y", path)
	if err != nil && command.ExitCode(err) >= 0 && command.ExitCode(err) <= 2 {
		return nil
	}
	return err
}
