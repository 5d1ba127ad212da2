package hostops

// Copying the caller's kernel modules tree into an image staging tree.

import (
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"banger/internal/beneath"
)

// maxModulesDepth bounds the modules tree walk (lib/modules/<version>/
// kernel/drivers/... is about 8 deep).
const maxModulesDepth = 32

// copyModules copies the regular files and directories of the caller's
// kernel modules tree src (opened beneath the caller's root) into dst, a
// directory of the root-owned staging tree, skipping symlinks (build/,
// source/) and anything else. The source is walked by descriptor: each
// directory is opened beneath its parent with no symlink followed, its
// entries read from that descriptor, and each file checked (the caller's,
// one link) before it is read.
func copyModules(src *beneath.Dir, dst string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", dst, err)
	}
	df, err := os.OpenFile(dst, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening %s: %w", dst, err)
	}
	dd, err := beneath.NewDir(df, dst, beneath.Owner{UID: os.Geteuid(), GID: os.Getegid()})
	if err != nil {
		df.Close()
		return err
	}
	defer dd.Close()
	return copyModulesDir(src, dd, 0)
}

func copyModulesDir(src, dst *beneath.Dir, depth int) error {
	if depth > maxModulesDepth {
		return fmt.Errorf("%w: kernel modules %s: more than %d directories deep", ErrRefused, src.Path(), maxModulesDepth)
	}
	entries, err := src.Entries()
	if err != nil {
		return fmt.Errorf("reading modules %s: %w", src.Path(), err)
	}
	for _, e := range entries {
		switch e.Type() {
		case unix.S_IFDIR:
			s, err := src.OpenDir(e.Name)
			if err != nil {
				return fmt.Errorf("kernel modules: %w", refused(err))
			}
			d, err := dst.MkdirAll(e.Name, 0o755)
			if err == nil {
				err = copyModulesDir(s, d, depth+1)
				d.Close()
			}
			s.Close()
			if err != nil {
				return err
			}
		case unix.S_IFREG:
			if err := copyModuleFile(src, dst, e.Name); err != nil {
				return err
			}
		}
	}
	return nil
}

func copyModuleFile(src, dst *beneath.Dir, name string) error {
	f, err := src.Open(name, unix.O_RDONLY)
	if err != nil {
		return fmt.Errorf("kernel modules: %w", refused(err))
	}
	defer f.Close()
	if err := dst.Remove(name, false); err != nil && !errIsNotExist(err) {
		return fmt.Errorf("replacing module %s: %w", name, err)
	}
	out, err := dst.Create(name, 0o644)
	if err != nil {
		return fmt.Errorf("copying module %s: %w", f.Name(), err)
	}
	if _, err := io.Copy(out, f); err != nil {
		out.Discard()
		return fmt.Errorf("copying module %s: %w", f.Name(), err)
	}
	return out.Close()
}
