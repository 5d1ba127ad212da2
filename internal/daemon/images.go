package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"banger/internal/api"
	"banger/internal/image"
	"banger/internal/storage"
	"banger/internal/store"
)

func (d *Daemon) rpcImageRegister(ctx context.Context, raw json.RawMessage) (any, error) {
	var p api.ImageRegisterParams
	if err := decodeParams(api.MethodImageRegister, raw, &p); err != nil {
		return nil, err
	}
	if !api.ValidName(p.Name) {
		return nil, invalidf("image name %q: use lowercase letters, digits and inner hyphens", p.Name)
	}
	if p.ModulesDir != "" {
		return nil, invalidf("--modules is not supported by image register yet; build the modules into the image")
	}
	if _, err := d.store.GetImageByName(ctx, p.Name); err == nil {
		return nil, withKind(ErrConflict, "an image named %q already exists; delete it first or pick another name", p.Name)
	}
	for flag, path := range map[string]string{"rootfs": p.RootfsPath, "kernel": p.KernelPath, "initrd": p.InitrdPath} {
		if path == "" {
			continue
		}
		if fi, err := os.Stat(path); err != nil || fi.IsDir() {
			return nil, invalidf("%s %s does not exist or is not a file", flag, path)
		}
	}
	if p.InitrdPath != "" && p.KernelPath == "" {
		return nil, invalidf("--initrd needs --kernel")
	}
	// Junk is refused before anything is copied: a kernel Firecracker cannot
	// boot, a file that is no ext4, an ext4 without an init.
	if p.KernelPath != "" {
		if err := image.CheckKernel(p.KernelPath); err != nil {
			return nil, invalidf("%v", err)
		}
	}
	init, err := image.CheckRootfs(ctx, p.RootfsPath)
	if err != nil {
		if errors.Is(err, image.ErrNoDebugfs) {
			return nil, withKind(ErrUnavailable, "%v", err)
		}
		return nil, invalidf("%v", err)
	}
	img := store.Image{ID: store.NewID(), Name: p.Name, Source: "registered", CreatedAt: time.Now()}
	dir := filepath.Join(d.paths.ImagesDir, img.ID)
	unlock := d.locks.lock(imageLock(img.ID))
	defer unlock()
	in, rv, err := d.beginImage(ctx, opImageRegister, img, dir)
	if err != nil {
		return nil, err
	}
	defer rv.fail()
	copyIn := func(src, name string) (string, error) {
		dst := filepath.Join(dir, name)
		if err := storage.SparseCopy(ctx, src, dst); err != nil {
			return "", fmt.Errorf("copying %s into %s: %w", src, dir, err)
		}
		return dst, nil
	}
	if img.RootfsPath, err = copyIn(p.RootfsPath, "rootfs.ext4"); err != nil {
		return nil, err
	}
	if fi, err := os.Stat(img.RootfsPath); err == nil {
		img.SizeBytes = fi.Size()
	}
	if p.KernelPath != "" {
		if img.KernelPath, err = copyIn(p.KernelPath, "vmlinux"); err != nil {
			return nil, err
		}
	}
	if p.InitrdPath != "" {
		if img.InitrdPath, err = copyIn(p.InitrdPath, "initrd.img"); err != nil {
			return nil, err
		}
	}
	if err := d.endImage(ctx, &img, in); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return nil, withKind(ErrConflict, "an image named %q already exists", p.Name)
		}
		return nil, err
	}
	rv.success()
	d.log.Info("registered image", "image", img.Name, "id", img.ID, "size", img.SizeBytes, "init", init)
	return imageToAPI(img), nil
}

func imageToAPI(im store.Image) api.Image {
	return api.Image{ID: im.ID, Name: im.Name, RootfsPath: im.RootfsPath, KernelPath: im.KernelPath, InitrdPath: im.InitrdPath,
		ModulesDir: im.ModulesDir, SizeBytes: im.SizeBytes, PackagesHash: im.PackagesHash, CreatedAt: im.CreatedAt}
}

func (d *Daemon) rpcImageList(ctx context.Context, raw json.RawMessage) (any, error) {
	if err := decodeParams(api.MethodImageList, raw, &struct{}{}); err != nil {
		return nil, err
	}
	imgs, err := d.store.ListImages(ctx)
	if err != nil {
		return nil, err
	}
	out := api.ImageList{Images: []api.Image{}}
	current := currentPackagesHash()
	for _, im := range imgs {
		a := imageToAPI(im)
		a.Stale = image.Stale(im.PackagesHash, current)
		out.Images = append(out.Images, a)
	}
	return out, nil
}

func (d *Daemon) rpcImageDelete(ctx context.Context, raw json.RawMessage) (any, error) {
	var p api.ImageRef
	if err := decodeParams(api.MethodImageDelete, raw, &p); err != nil {
		return nil, err
	}
	img, err := d.store.GetImageByName(ctx, p.Name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, withKind(ErrNotFound, "no image named %q (see `banger image list`)", p.Name)
	} else if err != nil {
		return nil, err
	}
	unlock := d.locks.lock(imageLock(img.ID))
	defer unlock()
	dir := filepath.Join(d.paths.ImagesDir, img.ID)
	if !strings.HasPrefix(img.RootfsPath, dir+"/") {
		dir = "" // files registered elsewhere by an older build: not ours to remove
	}
	// The row goes in the same transaction as the intent to remove the
	// files, so a daemon killed before they are gone finishes at start-up.
	data, err := intentData(imageData{Name: img.Name, Dir: dir})
	if err != nil {
		return nil, err
	}
	in := &store.Intent{ImageID: img.ID, Op: opImageDelete, Data: data}
	if err := d.store.Write(ctx, func(tx *store.Tx) error {
		if err := tx.DeleteImage(img.ID); err != nil {
			return err
		}
		return tx.BeginIntent(in)
	}); err != nil {
		return nil, err
	}
	if err := d.removeImageFiles(img.ID, dir); err != nil {
		// The image is gone from the store; the intent stays so the
		// files are removed by the next reconcile.
		d.log.Warn("removing image files; retried by reconcile", "image", img.Name, "err", err)
		return map[string]string{"deleted": img.Name}, nil
	}
	if err := d.store.EndIntent(ctx, in.ID); err != nil {
		d.log.Warn("clearing the intent of a finished image delete; reconcile clears it", "image", img.Name, "err", err)
	}
	return map[string]string{"deleted": img.Name}, nil
}

// beginImage records the intent of an image register or build and makes
// the image's directory; the reverter undoes both.
func (d *Daemon) beginImage(ctx context.Context, op string, img store.Image, dir string) (*store.Intent, *reverter, error) {
	data, err := intentData(imageData{Name: img.Name, Dir: dir})
	if err != nil {
		return nil, nil, err
	}
	in := &store.Intent{ImageID: img.ID, Op: op, Data: data}
	if err := d.store.BeginIntent(ctx, in); err != nil {
		return nil, nil, fmt.Errorf("recording %s of image %s: %w", op, img.Name, err)
	}
	rv := newReverter(d.log)
	rv.add("forget the image intent", func(ctx context.Context) error { return d.store.EndIntent(ctx, in.ID) })
	if err := os.MkdirAll(dir, 0o700); err != nil {
		rv.fail()
		return nil, nil, fmt.Errorf("creating %s: %w", dir, err)
	}
	rv.add("remove image dir", func(context.Context) error { return d.removeImageDir(img.ID, dir) })
	return in, rv, nil
}

// endImage records the image and clears its intent in one transaction.
func (d *Daemon) endImage(ctx context.Context, img *store.Image, in *store.Intent) error {
	return d.store.Write(ctx, func(tx *store.Tx) error {
		if err := tx.CreateImage(img); err != nil {
			return err
		}
		return tx.EndIntent(in.ID)
	})
}

// currentPackagesHash is the hash of the package list a build would use now
// ("" when the scripts cannot be found, which marks nothing stale).
func currentPackagesHash() string {
	exe, _ := os.Executable()
	dir := image.FindScripts(exe, os.Getenv)
	if dir == "" {
		return ""
	}
	h, err := image.PackagesHash(filepath.Join(dir, image.PackagesFile))
	if err != nil {
		return ""
	}
	return h
}
