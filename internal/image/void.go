package image

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"banger/internal/api"
	"banger/internal/command"
)

// Registrar records a built image (the daemon's image.register, which
// copies the file into the state directory).
type Registrar interface {
	RegisterImage(ctx context.Context, p api.ImageRegisterParams) (api.Image, error)
}

// VoidOptions configure BuildVoid.
type VoidOptions struct {
	Name      string // image name to register, e.g. "void"
	SizeBytes int64  // size of the ext4 image file
	// Tarball is the Void x86_64-glibc ROOTFS tarball: a local path or an
	// https URL. SHA256 is required for a URL and checked for a path when
	// given.
	Tarball string
	SHA256  string
	// ImagesDir is the repository's images/ directory (the script and
	// packages.void).
	ImagesDir string
	Agent     string // banger-agent binary to install
	PubKey    string // the runtime bundle's id_ed25519.pub
	// WorkDir holds the download and the image file until it is
	// registered; a fresh directory is made inside it and removed after.
	WorkDir string
	// XBPSInstall is the static xbps-install; "" means $XBPS_INSTALL (via
	// Getenv), else xbps-install.static on PATH.
	XBPSInstall string
	Getenv      func(string) string
	Fetcher     Fetcher
	Register    Registrar
	Out         io.Writer // progress, one line per stage with elapsed time
	Log         io.Writer // the script's full output
	// Euid decides whether the script runs directly (0) or with sudo -n.
	Euid int
}

// VoidScript is the script's path below the images directory.
const VoidScript = "void/make-rootfs-void.sh"

// VoidPackages is the package list's path below the images directory.
const VoidPackages = "packages.void"

// FindImagesDir locates the repository's images/ directory: flag if
// given, else images/ two levels above the binary's directory (build/bin in
// a checkout), else ./images.
func FindImagesDir(flag, exeDir, cwd string) (string, error) {
	var candidates []string
	if flag != "" {
		candidates = []string{flag}
	} else {
		if exeDir != "" {
			candidates = append(candidates,
				filepath.Join(exeDir, "..", "share", "banger", "images"), // make install
				filepath.Join(exeDir, "..", "..", "images"))              // build/bin in a checkout
		}
		candidates = append(candidates, filepath.Join(cwd, "images"))
	}
	for _, c := range candidates {
		if fi, err := os.Stat(filepath.Join(c, VoidScript)); err == nil && fi.Mode().IsRegular() {
			return filepath.Abs(c)
		}
	}
	return "", fmt.Errorf("cannot find the image scripts (%s under %s); run from a banger checkout or pass --images-dir", VoidScript, strings.Join(candidates, ", "))
}

// ResolveXBPS finds the static xbps-install.
func ResolveXBPS(explicit string, getenv func(string) string) (string, error) {
	p := explicit
	if p == "" && getenv != nil {
		p = getenv("XBPS_INSTALL")
	}
	if p == "" {
		found, err := command.LookPath("xbps-install.static")
		if err != nil {
			return "", errors.New("the static xbps-install is missing: download https://repo-default.voidlinux.org/static/xbps-static-latest.x86_64-musl.tar.xz, unpack it and put usr/bin/xbps-install.static on PATH, or set XBPS_INSTALL to its path")
		}
		p = found
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	if fi, err := os.Stat(abs); err != nil || fi.Mode()&0o111 == 0 {
		return "", fmt.Errorf("xbps-install %s is not an executable file; set XBPS_INSTALL to the static xbps-install", abs)
	}
	return abs, nil
}

// BuildVoid builds the Void image with images/void/make-rootfs-void.sh and
// registers it under opts.Name. It never touches the Debian image or the
// default image name.
func BuildVoid(ctx context.Context, opts VoidOptions) (api.Image, error) {
	start := time.Now()
	say := func(format string, args ...any) {
		if opts.Out != nil {
			fmt.Fprintf(opts.Out, "  %7.1fs  %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
		}
	}
	script := filepath.Join(opts.ImagesDir, VoidScript)
	packages := filepath.Join(opts.ImagesDir, VoidPackages)
	for _, f := range []string{script, packages, opts.Agent, opts.PubKey} {
		if _, err := os.Stat(f); err != nil {
			return api.Image{}, fmt.Errorf("building void image: %w", err)
		}
	}
	if opts.Tarball == "" {
		return api.Image{}, errors.New("no Void ROOTFS tarball: pass --rootfs-tarball PATH|URL (with --sha256 for a URL) or add [void_rootfs] to the manifest")
	}
	xbps, err := ResolveXBPS(opts.XBPSInstall, opts.Getenv)
	if err != nil {
		return api.Image{}, err
	}
	if err := os.MkdirAll(opts.WorkDir, 0o755); err != nil {
		return api.Image{}, fmt.Errorf("creating build dir: %w", err)
	}
	work, err := os.MkdirTemp(opts.WorkDir, "void-")
	if err != nil {
		return api.Image{}, fmt.Errorf("creating build dir: %w", err)
	}
	defer os.RemoveAll(work)
	// The script runs as root and writes here; it must be able to, and the
	// daemon must be able to read the result.
	if err := os.Chmod(work, 0o755); err != nil {
		return api.Image{}, err
	}

	tarball := opts.Tarball
	if strings.Contains(tarball, "://") && !strings.HasPrefix(tarball, "file://") {
		if opts.SHA256 == "" {
			return api.Image{}, fmt.Errorf("--sha256 is required with a URL (%s)", tarball)
		}
		if !ValidSHA256(opts.SHA256) {
			return api.Image{}, fmt.Errorf("--sha256 %q is not 64 lowercase hex digits", opts.SHA256)
		}
		say("fetching %s", tarball)
		dst := filepath.Join(work, "rootfs.tar")
		if err := opts.Fetcher.Fetch(ctx, "void rootfs", Artifact{URL: tarball}, ".", opts.SHA256, dst); err != nil {
			return api.Image{}, err
		}
		tarball = dst
	} else {
		p, _ := localPath(tarball, ".")
		if tarball, err = filepath.Abs(p); err != nil {
			return api.Image{}, err
		}
		if opts.SHA256 != "" {
			got, _, err := hashFile(tarball)
			if err != nil {
				return api.Image{}, fmt.Errorf("reading void rootfs tarball: %w", err)
			}
			if got != opts.SHA256 {
				return api.Image{}, &ChecksumError{Artifact: "void rootfs", Source: opts.Tarball, Expected: opts.SHA256, Actual: got}
			}
		}
	}

	out := filepath.Join(work, opts.Name+".ext4")
	args := []string{script,
		"--tarball", tarball, "--packages", packages, "--agent", opts.Agent, "--pubkey", opts.PubKey,
		"--output", out, "--size", fmt.Sprint(opts.SizeBytes), "--xbps-install", xbps}
	name := "bash"
	if opts.Euid != 0 {
		name, args = "sudo", append([]string{"-n", "bash"}, args...)
	}
	say("running %s", VoidScript)
	if err := runScript(ctx, name, args, start, opts.Out, opts.Log); err != nil {
		return api.Image{}, err
	}
	say("registering image %s", opts.Name)
	img, err := opts.Register.RegisterImage(ctx, api.ImageRegisterParams{Name: opts.Name, RootfsPath: out})
	if err != nil {
		return api.Image{}, fmt.Errorf("registering void image %s: %w", opts.Name, err)
	}
	say("done")
	return img, nil
}

// runScript runs the build script, printing its "==> " stage lines with the
// elapsed time to out and everything to log; on failure the error carries
// the last lines of its output.
func runScript(ctx context.Context, name string, args []string, start time.Time, out, log io.Writer) error {
	pr, pw := io.Pipe()
	var tail []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if log != nil {
				fmt.Fprintln(log, line)
			}
			if stage, ok := strings.CutPrefix(line, "==> "); ok && out != nil {
				fmt.Fprintf(out, "  %7.1fs  %s\n", time.Since(start).Seconds(), stage)
			}
			tail = append(tail, line)
			if len(tail) > 5 {
				tail = tail[1:]
			}
		}
		io.Copy(io.Discard, pr)
	}()
	_, _, err := command.Cmd{Name: name, Args: args, Stdout: pw, Stderr: pw}.Run(ctx)
	pw.Close()
	<-done
	if err != nil {
		msg := strings.Join(tail, " | ")
		if name == "sudo" && strings.Contains(msg, "password is required") {
			msg = "sudo -n needs a password: building an image runs the script as root; run `sudo banger image build void` or allow it in sudoers"
		}
		return fmt.Errorf("running %s: %v: %s", VoidScript, errors.Unwrap(err), msg)
	}
	return nil
}
