package storage

import (
	"context"
	"errors"
	"fmt"
	"os"

	"banger/internal/hostops"

	"golang.org/x/sys/unix"
)

// How a disk file was copied (Made.Copy).
const (
	CopyReflink = "reflink" // FICLONE: the copy shares the source's extents
	CopySparse  = "sparse"  // the data extents copied, holes left holes
)

// SparseCopy copies src to a new file dst: a FICLONE reflink when the
// filesystem supports it, else only the data extents (SEEK_DATA and
// SEEK_HOLE), so holes stay holes. On failure (ENOSPC included) dst is
// removed and the error names it.
func SparseCopy(ctx context.Context, src, dst string) error {
	_, err := sparseCopy(ctx, src, dst)
	return err
}

// sparseCopy is SparseCopy, saying which way it copied: CopyReflink or
// CopySparse.
func sparseCopy(ctx context.Context, src, dst string) (string, error) {
	sf, err := os.Open(src)
	if err != nil {
		return "", fmt.Errorf("opening %s: %w", src, err)
	}
	defer sf.Close()
	df, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("creating %s: %w", dst, err)
	}
	// hostops.CopySparse tries the reflink first too but does not say
	// whether it worked; one failed ioctl more is cheap next to a copy.
	how := CopyReflink
	if unix.IoctlFileClone(int(df.Fd()), int(sf.Fd())) != nil {
		how = CopySparse
		err = hostops.CopySparse(ctx, df, sf)
	}
	if cerr := df.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", errors.Join(fmt.Errorf("copying %s to %s: %w", src, dst, err), removeIfThere(dst))
	}
	return how, nil
}

// copyRoot makes root, the copy driver's root disk: the image (grown to
// size once and cached, see grown.go, when it has an ID and a seed
// directory) copied to a temporary name, grown to size when not already,
// then renamed. It fills in made's Copy and Grown.
func (m *Manager) copyRoot(ctx context.Context, imageID, image, root string, size int64, made *Made) error {
	tmp := root + ".tmp"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing stale %s: %w", tmp, err)
	}
	if _, err := os.Lstat(root); err == nil {
		return fmt.Errorf("%s already exists", root)
	}
	src := image
	made.Grown = GrownInPlace
	if imageID != "" && m.seeds != "" {
		grown, built, err := m.grownRoot(ctx, imageID, image, size)
		if err != nil {
			return err
		}
		src = grown
		made.Grown = GrownCached
		if built {
			made.Grown = GrownBuilt
		}
	}
	how, err := sparseCopy(ctx, src, tmp)
	if err != nil {
		return err
	}
	made.Copy = how
	if src == image { // a grown copy is already its size
		err = growFile(ctx, m.host, tmp, size)
	}
	if err == nil {
		err = os.Rename(tmp, root)
	}
	if err != nil {
		return errors.Join(err, removeIfThere(tmp))
	}
	return nil
}

// removeIfThere removes a half-made file; one already gone is fine.
func removeIfThere(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing half-made %s: %w", path, err)
	}
	return nil
}

// growFile extends path to size (never shrinks) and grows its filesystem.
func growFile(ctx context.Context, h Host, path string, size int64) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.Size() < size {
		if err := os.Truncate(path, size); err != nil {
			return fmt.Errorf("extending %s to %s: %w", path, human(size), err)
		}
	}
	if _, err := h.GrowFS(ctx, path); err != nil {
		return fmt.Errorf("growing the filesystem in %s: %w", path, err)
	}
	return nil
}
