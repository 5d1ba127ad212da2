package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/hostops"
	"banger/internal/image"
	"banger/internal/store"
)

// imageBuildHost is the part of the privileged seam image.build needs
// (implemented by *hostops.Client).
type imageBuildHost interface {
	image.DebianHost
}

func (d *Daemon) rpcImageBuild(ctx context.Context, raw json.RawMessage) (any, error) {
	var p api.ImageBuildParams
	if err := decodeParams(api.MethodImageBuild, raw, &p); err != nil {
		return nil, err
	}
	if p.Distro != api.DistroDebian {
		return nil, invalidf("image build: unknown distribution %q (supported: %s)", p.Distro, api.DistroDebian)
	}
	if p.Name == "" {
		p.Name = image.DefaultDebianName
	}
	if !api.ValidName(p.Name) {
		return nil, invalidf("image name %q: use lowercase letters, digits and inner hyphens", p.Name)
	}
	size := int64(image.DefaultDebianSize)
	if p.Size != "" {
		var err error
		if size, err = config.ParseSize(p.Size); err != nil {
			return nil, invalidf("image size %q: %v", p.Size, err)
		}
		if size < 1<<30 {
			return nil, invalidf("image size %s is too small for the Debian image; use at least 1G", p.Size)
		}
		size = (size + 4095) &^ 4095
	}
	host, ok := d.host.(imageBuildHost)
	if !ok || d.host == nil {
		return nil, withKind(ErrUnavailable, "image build needs the privileged helper, which this daemon does not have")
	}
	if !image.HaveDebootstrap() {
		return nil, withKind(ErrUnavailable, "debootstrap is not installed; install it with `sudo apt-get install debootstrap`")
	}
	if _, err := d.store.GetImageByName(ctx, p.Name); err == nil {
		return nil, withKind(ErrConflict, "an image named %q already exists; delete it first or pick another name", p.Name)
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	exe, _ := os.Executable()
	scripts := image.FindScripts(exe, os.Getenv)
	if scripts == "" && os.Geteuid() == 0 {
		return nil, withKind(ErrUnavailable, "image build scripts (images/) not found next to %s; set %s to the repository's images directory", exe, image.ScriptsEnv)
	}
	agent, err := imageBuildAgent(d.cfg.VsockAgentPath, exe)
	if err != nil {
		return nil, withKind(ErrUnavailable, "%v", err)
	}
	modules := filepath.Join(d.cfg.RuntimeDir, image.FileModules)
	if fi, err := os.Stat(modules); err != nil || !fi.IsDir() {
		modules = ""
	}

	img := store.Image{ID: store.NewID(), Name: p.Name, Source: store.SourceBuilt}
	dir := filepath.Join(d.paths.ImagesDir, img.ID)
	unlock := d.locks.lock(imageLock(img.ID))
	defer unlock()
	in, rv, err := d.beginImage(ctx, opImageBuild, img, dir)
	if err != nil {
		return nil, err
	}
	defer rv.fail()

	start := time.Now()
	progress := func(stage, msg string, el time.Duration) {
		d.events.publish(api.Event{Kind: api.EventImage, Time: time.Now(), Stage: stage,
			Message: p.Name + ": " + msg, Elapsed: el.Seconds()})
	}
	d.log.Info("building image", "image", p.Name, "id", img.ID, "size", size, "scripts", scripts)
	res, err := image.BuildDebian(ctx, host, image.DebianOptions{
		Out:        filepath.Join(dir, "rootfs.ext4"),
		WorkDir:    filepath.Join(dir, "build"),
		SizeBytes:  size,
		AgentPath:  agent,
		SSHKeyPath: d.cfg.SSHKeyPath,
		ModulesDir: modules,
		ScriptsDir: scripts,
		Progress:   progress,
	})
	if err != nil {
		if errors.Is(err, hostops.ErrNotFound) { // debootstrap (hostops.ErrNoDebootstrap) or another tool missing
			return nil, withKind(ErrUnavailable, "building image %s: %v", p.Name, err)
		}
		return nil, fmt.Errorf("building image %s: %w", p.Name, err)
	}
	img.RootfsPath = filepath.Join(dir, "rootfs.ext4")
	img.SizeBytes = res.SizeBytes
	img.PackagesHash = res.PackagesHash
	img.CreatedAt = time.Now()
	if err := d.endImage(ctx, &img, in); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return nil, withKind(ErrConflict, "an image named %q was created while this one was building", p.Name)
		}
		return nil, err
	}
	rv.success()
	out := api.ImageBuildResult{Image: imageToAPI(img), ElapsedS: time.Since(start).Seconds()}
	for _, s := range res.Stages {
		out.Stages = append(out.Stages, api.ImageBuildStage{Stage: s.Stage, ElapsedS: s.Elapsed.Seconds()})
	}
	d.log.Info("built image", "image", img.Name, "id", img.ID, "took", time.Since(start).Round(time.Second), "packages_hash", img.PackagesHash)
	return out, nil
}

// imageBuildAgent picks the agent to put in a built image: vsock_agent_path
// (the runtime bundle's) when it exists, else banger-agent next to the
// daemon's binary (build/bin, or where `make install` put it), so an image
// can be built before the bundle is installed.
func imageBuildAgent(configured, exe string) (string, error) {
	cands := []string{configured}
	if exe != "" {
		if r, err := filepath.EvalSymlinks(exe); err == nil {
			exe = r
		}
		cands = append(cands, filepath.Join(filepath.Dir(exe), image.FileAgent))
	}
	for _, c := range cands {
		if fi, err := os.Stat(c); c != "" && err == nil && fi.Mode().IsRegular() {
			return c, nil
		}
	}
	return "", fmt.Errorf("no guest agent to put in the image: neither %s (vsock_agent_path) nor %s exists; run `banger runtime install`, which installs it, or `make install` in the checkout", cands[0], cands[len(cands)-1])
}
