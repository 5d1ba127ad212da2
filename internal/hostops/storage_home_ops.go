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

	"banger/internal/beneath"
)

// opSeedWorkDisk builds the work-disk seed: the image and the output are
// resolved beneath the caller's roots first (the image the caller's with
// one link, the output created O_EXCL and handed to the caller), then
// debugfs and mkfs work in a root-owned 0700 staging directory on the
// image's descriptor, and the result is copied into the output's.
func opSeedWorkDisk(ctx context.Context, c Caller, raw json.RawMessage) (res any, err error) {
	var a SeedArgs
	if err := decode("seed-work-disk", raw, &a); err != nil {
		return nil, err
	}
	cf := c.files()
	defer cf.Close()
	if _, err := cf.rootOf(a.Out); err != nil {
		return nil, err
	}
	img, err := cf.open(a.Image, unix.O_RDONLY)
	if err != nil {
		return nil, err
	}
	defer img.Close()
	if _, err := Ext4Bytes(img); err != nil {
		return nil, fmt.Errorf("image %s: %w", a.Image, err)
	}
	out, err := cf.create(a.Out, 0o600)
	if err != nil {
		if errors.Is(err, ErrRefused) {
			return nil, err
		}
		return nil, fmt.Errorf("creating %s: %w", a.Out, err)
	}
	defer func() {
		if err != nil {
			out.Discard()
		} else if cerr := out.Close(); cerr != nil {
			err = fmt.Errorf("writing %s: %w", a.Out, cerr)
		}
	}()
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
	if err := copyOut(ctx, seed, out.File); err != nil {
		return nil, fmt.Errorf("writing %s: %w", a.Out, err)
	}
	return nil, nil
}

// restoreSpecialBits puts back the setuid, setgid and sticky bits that
// debugfs rdump drops, reading the modes with one debugfs run that lists
// every staged directory. The staging directory is root's, but what is in
// it comes from the caller's image: each file is reached beneath it with
// no symlink followed and changed through its descriptor.
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
	sf, err := os.OpenFile(stage, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	sd, err := beneath.NewDir(sf, stage, beneath.Owner{UID: os.Geteuid(), GID: os.Getegid()})
	if err != nil {
		sf.Close()
		return err
	}
	defer sd.Close()
	dir := ""
	for _, line := range strings.Split(string(out), "\n") {
		if rest, ok := strings.CutPrefix(line, "debugfs: ls -p "); ok {
			dir = strings.Trim(rest, "\"")
			continue
		}
		f := strings.Split(strings.TrimSpace(line), "/")
		if dir == "" || len(f) != 8 || f[5] == "." || f[5] == ".." || f[5] == "" {
			continue // "/ino/mode/uid/gid/name/size/": a name with a "/" (a crafted image) has more
		}
		var mode uint32
		if _, err := fmt.Sscanf(f[2], "%o", &mode); err != nil || mode&0o7000 == 0 {
			continue
		}
		pf, st, err := sd.Lookup(strings.TrimPrefix(dir, "/") + "/" + f[5])
		if err != nil {
			continue // not staged (rdump skips special files) or behind a symlink
		}
		if t := st.Mode & unix.S_IFMT; t == unix.S_IFREG || t == unix.S_IFDIR {
			err = beneath.Chmod(pf, mode&0o7777)
		}
		pf.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// copyOut sparse-copies the staged seed src into out, the caller's new file.
func copyOut(ctx context.Context, src string, out *os.File) error {
	sf, err := os.Open(src)
	if err != nil {
		return err
	}
	defer sf.Close()
	return CopySparse(ctx, out, sf)
}
