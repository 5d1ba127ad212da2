package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"banger/internal/ext4"
)

// The work disk is a per-VM ext4 mounted on /root in the guest. It is
// seeded from the image's /root: a small seed filesystem is built once per
// image through the privileged seam (the image's /root is root-owned 0700)
// and cached under SeedDir; each VM then gets a sparse copy of the seed,
// extended to its size, checked and resized as the user.

var imageIDRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`) // length checked apart

// CreateWorkDisk creates the work disk out (which must not exist) of size
// bytes, seeded from the /root of the image imageID at imagePath.
func (m *Manager) CreateWorkDisk(ctx context.Context, imageID, imagePath, out string, size int64) error {
	if len(imageID) > 101 || !imageIDRe.MatchString(imageID) {
		return fmt.Errorf("bad image id %q", imageID)
	}
	if size <= 0 || size%4096 != 0 {
		return fmt.Errorf("work disk size %d must be a positive multiple of 4096 bytes", size)
	}
	if _, err := checkImage(imagePath); err != nil {
		return err
	}
	if _, err := os.Lstat(out); err == nil {
		return fmt.Errorf("work disk %s already exists; delete it or pick another vm", out)
	}
	seed, err := m.seed(ctx, imageID, imagePath)
	if err != nil {
		return err
	}
	fi, err := os.Stat(seed)
	if err != nil {
		return fmt.Errorf("work-disk seed: %w", err)
	}
	if size < fi.Size() {
		return fmt.Errorf("work disk size %s is smaller than the /root seed of image %s (%s)", human(size), imageID, human(fi.Size()))
	}
	tmp := out + ".tmp"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing stale %s: %w", tmp, err)
	}
	if err := SparseCopy(ctx, seed, tmp); err != nil {
		return fmt.Errorf("creating work disk %s: %w", out, err)
	}
	err = growFile(ctx, m.host, tmp, size)
	if err == nil {
		// A link never replaces an existing file, unlike a rename.
		if err = os.Link(tmp, out); err != nil {
			err = fmt.Errorf("placing work disk %s: %w", out, err)
		}
	}
	os.Remove(tmp)
	if err != nil {
		return fmt.Errorf("creating work disk %s: %w", out, err)
	}
	return nil
}

// SeedBytes is the size of the image's work-disk seed (built and cached
// when needed): the smallest work disk the image allows. vm create checks
// it before allocating anything.
func (m *Manager) SeedBytes(ctx context.Context, imageID, imagePath string) (int64, error) {
	seed, err := m.seed(ctx, imageID, imagePath)
	if err != nil {
		return 0, err
	}
	fi, err := os.Stat(seed)
	if err != nil {
		return 0, fmt.Errorf("work-disk seed: %w", err)
	}
	return fi.Size(), nil
}

// seed returns the cached seed for the image, building it when the image
// changed or none exists yet. Seeds of older versions of the image go.
func (m *Manager) seed(ctx context.Context, imageID, imagePath string) (string, error) {
	if m.seeds == "" {
		return "", errors.New("no work-disk seed directory configured")
	}
	fi, err := os.Stat(imagePath)
	if err != nil {
		return "", fmt.Errorf("image %s: %w", imagePath, err)
	}
	p := filepath.Join(m.seeds, fmt.Sprintf("%s-%x-%x.ext4", imageID, fi.Size(), fi.ModTime().UnixNano()))
	m.seedMu.Lock()
	defer m.seedMu.Unlock()
	if f, err := os.Open(p); err == nil {
		_, err = ext4.Bytes(f)
		f.Close()
		if err == nil {
			return p, nil
		}
		os.Remove(p) // damaged: rebuild
	}
	if err := os.MkdirAll(m.seeds, 0o700); err != nil {
		return "", fmt.Errorf("creating seed directory %s: %w", m.seeds, err)
	}
	old, _ := filepath.Glob(filepath.Join(m.seeds, imageID+"-*.ext4*"))
	for _, o := range old {
		if o != p && strings.Count(strings.TrimPrefix(filepath.Base(o), imageID+"-"), "-") == 1 {
			os.Remove(o)
		}
	}
	tmp := p + ".tmp"
	os.Remove(tmp)
	if err := m.host.SeedWorkDisk(ctx, imagePath, tmp); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("seeding work disks from /root of image %s: %w", imageID, err)
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("caching work-disk seed %s: %w", p, err)
	}
	m.log.Info("built work-disk seed", "image", imageID, "path", p)
	return p, nil
}

// GrowWorkDisk grows the (stopped VM's) work disk at path to size bytes
// and its filesystem with it. Shrinking is refused.
func (m *Manager) GrowWorkDisk(ctx context.Context, path string, size int64) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("work disk: %w", err)
	}
	if size < fi.Size() {
		return fmt.Errorf("work disk %s is %s; shrinking it to %s is not supported: pick a size of at least %s",
			path, human(fi.Size()), human(size), human(fi.Size()))
	}
	if size%4096 != 0 {
		return fmt.Errorf("work disk size %d must be a multiple of 4096 bytes", size)
	}
	if err := growFile(ctx, m.host, path, size); err != nil {
		return fmt.Errorf("growing work disk: %w", err)
	}
	return nil
}

// RepairNestedRoot flattens a work disk whose home sits one level too deep
// (a top-level root/ holding .bashrc, .profile, .ssh, ...; DESIGN.md §7)
// and returns what moved, for the caller to log. It needs no privilege:
// the disk is the user's file, edited in userspace (ext4.RepairNestedHome)
// and never mounted on the host.
func (m *Manager) RepairNestedRoot(ctx context.Context, workDisk string) ([]string, error) {
	moves, err := ext4.RepairNestedHome(ctx, workDisk)
	if err != nil {
		return nil, fmt.Errorf("repairing nested /root in %s: %w", workDisk, err)
	}
	return moves, nil
}
