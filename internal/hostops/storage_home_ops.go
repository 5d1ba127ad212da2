// Work-disk seeding: the privileged walk over an image's /root. (The
// nested-/root repair of a work disk needs no privilege: internal/ext4.)

package hostops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

func opSeedWorkDisk(ctx context.Context, c Caller, raw json.RawMessage) (res any, err error) {
	var a SeedArgs
	if err := decode("seed-work-disk", raw, &a); err != nil {
		return nil, err
	}
	out, err := c.CheckPath(a.Out)
	if err != nil {
		return nil, err
	}
	img, err := openOwned(c, a.Image, false)
	if err != nil {
		return nil, err
	}
	defer img.Close()
	if _, err := Ext4Bytes(img); err != nil {
		return nil, fmt.Errorf("image %s: %w", a.Image, err)
	}
	stage, err := os.MkdirTemp("", "banger-seed-")
	if err != nil {
		return nil, fmt.Errorf("making seed staging dir: %w", err)
	}
	defer os.RemoveAll(stage)
	imgPath := fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), img.Fd())
	if _, err := Run(ctx, "debugfs", "-R", "rdump /root "+stage, imgPath); err != nil {
		return nil, fmt.Errorf("reading /root of %s: %w", a.Image, err)
	}
	tree := filepath.Join(stage, "root")
	fi, err := os.Lstat(tree)
	switch {
	case errors.Is(err, os.ErrNotExist):
		fi, err = nil, os.Mkdir(tree, 0o700) // the image has no /root: an empty home
	case err == nil && !fi.IsDir():
		err = fmt.Errorf("/root in the image is not a directory")
	}
	if err != nil {
		return nil, fmt.Errorf("staging /root of %s: %w", a.Image, err)
	}
	if err := restoreSpecialBits(ctx, imgPath, stage); err != nil {
		return nil, fmt.Errorf("staging /root of %s: %w", a.Image, err)
	}
	mode, uid, gid := uint32(0o700), uint32(0), uint32(0)
	if fi != nil {
		st := fi.Sys().(*syscall.Stat_t)
		mode, uid, gid = uint32(fi.Mode().Perm())|uint32(st.Mode&0o7000), st.Uid, st.Gid
	}
	used, err := treeBytes(tree)
	if err != nil {
		return nil, fmt.Errorf("sizing /root of %s: %w", a.Image, err)
	}
	size := max(64<<20, 2*used+32<<20)
	size = (size + 4<<20 - 1) &^ (4<<20 - 1)
	seed := filepath.Join(stage, "seed.ext4")
	if _, err := Run(ctx, "mkfs.ext4", "-F", "-q", "-b", "4096", "-T", "default", "-E", "root_owner=0:0",
		"-d", tree, seed, fmt.Sprintf("%dk", size>>10)); err != nil {
		return nil, fmt.Errorf("building work-disk seed from %s: %w", a.Image, err)
	}
	// mkfs -d leaves the filesystem root 0755; it becomes the guest's /root.
	fix := fmt.Sprintf("sif / mode 0%o\nsif / uid %d\nsif / gid %d\n", 0o40000|mode, uid, gid)
	cmds := filepath.Join(stage, "fix.cmds")
	if err := os.WriteFile(cmds, []byte(fix), 0o600); err != nil {
		return nil, fmt.Errorf("writing %s: %w", cmds, err)
	}
	if _, err := Run(ctx, "debugfs", "-w", "-f", cmds, seed); err != nil {
		return nil, fmt.Errorf("setting the owner of / in the seed: %w", err)
	}
	return nil, copyOut(ctx, c, seed, out)
}

// restoreSpecialBits puts back the setuid, setgid and sticky bits that
// debugfs rdump drops, reading the modes with one debugfs run that lists
// every staged directory.
func restoreSpecialBits(ctx context.Context, img, stage string) error {
	var cmds strings.Builder
	err := filepath.WalkDir(filepath.Join(stage, "root"), func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(stage, p)
		if !strings.ContainsAny(rel, "\"\n\\") {
			fmt.Fprintf(&cmds, "ls -p \"/%s\"\n", rel)
		}
		return nil
	})
	if err != nil {
		return err
	}
	cmdFile := filepath.Join(stage, "modes.cmds")
	if err := os.WriteFile(cmdFile, []byte(cmds.String()), 0o600); err != nil {
		return err
	}
	out, err := Run(ctx, "debugfs", "-f", cmdFile, img)
	if err != nil {
		return fmt.Errorf("reading modes: %w", err)
	}
	dir := ""
	for _, line := range strings.Split(string(out), "\n") {
		if rest, ok := strings.CutPrefix(line, "debugfs: ls -p "); ok {
			dir = strings.Trim(rest, "\"")
			continue
		}
		f := strings.Split(strings.TrimSpace(line), "/")
		if dir == "" || len(f) < 7 || f[5] == "." || f[5] == ".." {
			continue
		}
		var mode uint32
		if _, err := fmt.Sscanf(f[2], "%o", &mode); err != nil || mode&0o7000 == 0 {
			continue
		}
		p := filepath.Join(stage, dir, f[5])
		if fi, err := os.Lstat(p); err == nil && fi.Mode()&os.ModeSymlink == 0 {
			if err := unix.Chmod(p, mode&0o7777); err != nil {
				return fmt.Errorf("chmod %s: %w", p, err)
			}
		}
	}
	return nil
}

// copyOut sparse-copies src to a new file out owned by the caller.
func copyOut(ctx context.Context, c Caller, src, out string) error {
	sf, err := os.Open(src)
	if err != nil {
		return err
	}
	defer sf.Close()
	df, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("creating %s: %w", out, err)
	}
	err = df.Chown(c.UID, c.GID)
	if err == nil {
		err = CopySparse(ctx, df, sf)
	}
	if cerr := df.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(out)
		return fmt.Errorf("writing %s: %w", out, err)
	}
	return nil
}
