package image

// The Debian default image: debootstrap, images/debian/customize.sh chrooted
// in the tree, mkfs.ext4 -d into the image file. The privileged steps run
// through the hostops seam (DebianHost); this side prepares what they read
// (the agent copy, the public key), reports progress and cleans up.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"banger/internal/command"
	"banger/internal/hostops"
)

// Files of the image scripts directory (the repository's images/).
const (
	PackagesFile      = "packages.apt"
	DebianCustomize   = "debian/customize.sh"
	DebianEnterChroot = "debian/enter-chroot.sh"
	// DefaultDebianName and DefaultDebianSize are image build debian's
	// defaults.
	DefaultDebianName = "debian"
	DefaultDebianSize = 4 << 30
	// ScriptsEnv names a scripts directory that overrides the search.
	ScriptsEnv = "BANGER_IMAGES_DIR"
)

// Debian build stages, in order, as reported to Progress.
const (
	StagePrepare     = "prepare"
	StageDebootstrap = "debootstrap"
	StageCustomize   = "customize"
	StageMkfs        = "mkfs"
)

// DebianHost is the privileged seam as the Debian build needs it
// (implemented by *hostops.Client).
type DebianHost interface {
	ImageDebootstrap(ctx context.Context, a hostops.DebootstrapArgs) (hostops.DebootstrapResult, error)
	ImageCustomize(ctx context.Context, a hostops.CustomizeArgs) (hostops.CustomizeResult, error)
	ImageMkfs(ctx context.Context, a hostops.MkfsArgs) error
	ImageRemoveStaging(ctx context.Context, staging string) error
}

// DebianOptions configure BuildDebian. Out and WorkDir must lie under the
// caller's banger directories (the privileged side refuses anything else).
type DebianOptions struct {
	Out        string // image file to create; must not exist
	WorkDir    string // scratch directory for the inputs handed to root; removed afterwards
	SizeBytes  int64
	AgentPath  string // the guest agent binary (config vsock_agent_path)
	SSHKeyPath string // private key (config ssh_key_path); its .pub goes into the image
	ModulesDir string // optional kernel modules tree (lib/modules/<version>/...) to install
	ScriptsDir string // images/ directory; used by the privileged side only for a root caller
	// Progress, when set, is told when a stage starts, every Heartbeat
	// while it runs, and when it ends, with the time since the stage began.
	Progress  func(stage, msg string, elapsed time.Duration)
	Heartbeat time.Duration // default 15s
}

// StageTime is how long one stage took.
type StageTime struct {
	Stage   string
	Elapsed time.Duration
}

// DebianResult describes a finished build.
type DebianResult struct {
	PackagesHash string
	Mirror       string
	SizeBytes    int64 // the image file's apparent size
	Stages       []StageTime
	Elapsed      time.Duration
}

// BuildDebian builds the default Debian image into o.Out. On failure
// nothing is left behind: no staging tree, no partial image.
func BuildDebian(ctx context.Context, host DebianHost, o DebianOptions) (res DebianResult, err error) {
	start := time.Now()
	if o.SizeBytes == 0 {
		o.SizeBytes = DefaultDebianSize
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = 15 * time.Second
	}
	if o.Out == "" || o.WorkDir == "" {
		return res, errors.New("building the debian image: output file and work directory are required")
	}
	cleanCtx := context.WithoutCancel(ctx)
	stage := func(name, msg string, fn func() error) error {
		t0 := time.Now()
		o.report(name, msg, 0)
		done := make(chan struct{})
		go func() {
			tick := time.NewTicker(o.Heartbeat)
			defer tick.Stop()
			for {
				select {
				case <-done:
					return
				case <-tick.C:
					o.report(name, "still running", time.Since(t0))
				}
			}
		}()
		err := fn()
		close(done)
		if err != nil {
			return err
		}
		el := time.Since(t0)
		res.Stages = append(res.Stages, StageTime{Stage: name, Elapsed: el})
		o.report(name, "done", el)
		return nil
	}

	var key string
	agentCopy := filepath.Join(o.WorkDir, "banger-agent")
	modulesCopy := ""
	if err := os.MkdirAll(o.WorkDir, 0o700); err != nil {
		return res, fmt.Errorf("creating build directory %s: %w", o.WorkDir, err)
	}
	defer os.RemoveAll(o.WorkDir)
	outFile, err := os.OpenFile(o.Out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return res, fmt.Errorf("creating image file %s: %w", o.Out, err)
	}
	outFile.Close()
	defer func() {
		if err != nil {
			os.Remove(o.Out)
		}
	}()

	err = stage(StagePrepare, "agent, ssh key, kernel modules", func() error {
		var err error
		if key, err = EnsureKeyPair(o.SSHKeyPath); err != nil {
			return err
		}
		if err := copyRegular(o.AgentPath, agentCopy, 0o755); err != nil {
			return fmt.Errorf("copying the agent %s (vsock_agent_path; `banger runtime install` provides it): %w", o.AgentPath, err)
		}
		if o.ModulesDir != "" {
			modulesCopy = filepath.Join(o.WorkDir, "modules")
			if err := copyTree(o.ModulesDir, modulesCopy); err != nil {
				return fmt.Errorf("copying kernel modules %s: %w", o.ModulesDir, err)
			}
		}
		return nil
	})
	if err != nil {
		return res, err
	}

	var staging string
	err = stage(StageDebootstrap, "debootstrap --variant=minbase "+hostops.DebianSuite, func() error {
		r, err := host.ImageDebootstrap(ctx, hostops.DebootstrapArgs{Suite: hostops.DebianSuite})
		if err != nil {
			return err
		}
		staging, res.Mirror = r.Staging, r.Mirror
		return nil
	})
	if err != nil {
		return res, err
	}
	defer func() {
		if rerr := host.ImageRemoveStaging(cleanCtx, staging); rerr != nil && err == nil {
			err = fmt.Errorf("removing build staging %s: %w", staging, rerr)
		}
	}()

	err = stage(StageCustomize, "images/debian/customize.sh from "+res.Mirror, func() error {
		r, err := host.ImageCustomize(ctx, hostops.CustomizeArgs{
			Staging: staging, ScriptsDir: o.ScriptsDir, AgentPath: agentCopy,
			AuthorizedKey: key, ModulesDir: modulesCopy,
		})
		res.PackagesHash = r.PackagesHash
		return err
	})
	if err != nil {
		return res, err
	}

	err = stage(StageMkfs, fmt.Sprintf("mkfs.ext4 -d, %d MiB", o.SizeBytes>>20), func() error {
		return host.ImageMkfs(ctx, hostops.MkfsArgs{Staging: staging, Out: o.Out, SizeBytes: o.SizeBytes, Label: "rootfs"})
	})
	if err != nil {
		return res, err
	}
	fi, err := os.Stat(o.Out)
	if err != nil {
		return res, fmt.Errorf("checking the built image %s: %w", o.Out, err)
	}
	res.SizeBytes = fi.Size()
	res.Elapsed = time.Since(start)
	return res, nil
}

func (o DebianOptions) report(stage, msg string, el time.Duration) {
	if o.Progress != nil {
		o.Progress(stage, msg, el)
	}
}

// EnsureKeyPair returns the authorized_keys line of the key pair at
// privPath (public half at privPath+".pub"). A missing public half is
// derived from the private key; a missing pair is generated (0600/0644).
func EnsureKeyPair(privPath string) (string, error) {
	if privPath == "" {
		return "", errors.New("no ssh key configured (ssh_key_path)")
	}
	pubPath := privPath + ".pub"
	if b, err := os.ReadFile(pubPath); err == nil {
		if _, _, _, _, err := ssh.ParseAuthorizedKey(b); err != nil {
			return "", fmt.Errorf("public key %s is not an OpenSSH public key: %v; remove it to have it regenerated", pubPath, err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	if b, err := os.ReadFile(privPath); err == nil {
		signer, err := ssh.ParsePrivateKey(b)
		if err != nil {
			return "", fmt.Errorf("private key %s: %v (a passphrase-protected key needs its .pub beside it)", privPath, err)
		}
		line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey()))) + " banger\n"
		if err := os.WriteFile(pubPath, []byte(line), 0o644); err != nil {
			return "", fmt.Errorf("writing public key %s: %w", pubPath, err)
		}
		return strings.TrimSpace(line), nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("reading private key %s: %w", privPath, err)
	}
	priv, pub, err := GenerateKey("banger")
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(privPath), 0o700); err != nil {
		return "", fmt.Errorf("creating key directory: %w", err)
	}
	if err := os.WriteFile(privPath, priv, 0o600); err != nil {
		return "", fmt.Errorf("writing private key %s: %w", privPath, err)
	}
	if err := os.WriteFile(pubPath, pub, 0o644); err != nil {
		return "", fmt.Errorf("writing public key %s: %w", pubPath, err)
	}
	return strings.TrimSpace(string(pub)), nil
}

// PackagesHash is the sha256 (hex) of a package list file; images record
// the hash of the list they were built from.
func PackagesHash(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading package list: %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// Stale reports whether an image built from the package list with hash
// built is out of date against the current list's hash. Images without a
// recorded hash (registered ones) are never stale.
func Stale(built, current string) bool {
	return built != "" && current != "" && built != current
}

// FindScripts locates the images/ directory: $BANGER_IMAGES_DIR, else next
// to the executable (the helper layout), else share/banger/images beside its
// bin directory, else the repository's images/ for a binary in build/bin,
// else the copy `make install-helper` puts beside the helper. It returns ""
// when none holds packages.apt and the Debian scripts.
func FindScripts(exe string, getenv func(string) string) string {
	var cands []string
	if v := getenv(ScriptsEnv); v != "" {
		cands = append(cands, v)
	}
	if exe != "" {
		if r, err := filepath.EvalSymlinks(exe); err == nil {
			exe = r
		}
		dir := filepath.Dir(exe)
		cands = append(cands,
			filepath.Join(dir, "images"),
			filepath.Join(dir, "..", "share", "banger", "images"),
			filepath.Join(dir, "..", "..", "images"))
	}
	cands = append(cands, filepath.Join(filepath.Dir(hostops.DefaultHelperPath), hostops.ImageScriptsDir))
	for _, c := range cands {
		abs, err := filepath.Abs(c)
		if err != nil {
			continue
		}
		ok := true
		for _, f := range []string{PackagesFile, DebianCustomize, DebianEnterChroot} {
			if fi, err := os.Stat(filepath.Join(abs, f)); err != nil || !fi.Mode().IsRegular() {
				ok = false
				break
			}
		}
		if ok {
			return abs
		}
	}
	return ""
}

func copyRegular(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", src)
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// copyTree copies directories and regular files (following no symlinks).
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case d.Type().IsRegular():
			return copyRegular(p, target, 0o644)
		}
		return nil
	})
}

// HaveDebootstrap reports whether debootstrap is installed, looking on PATH
// and in the sbin directories a user's PATH often lacks.
func HaveDebootstrap() bool {
	if _, err := command.LookPath("debootstrap"); err == nil {
		return true
	}
	for _, p := range []string{"/usr/sbin/debootstrap", "/sbin/debootstrap"} {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return true
		}
	}
	return false
}
