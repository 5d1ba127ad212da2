package image

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// InstallOptions say what `banger runtime install` assembles and where.
type InstallOptions struct {
	RuntimeDir string
	Manifest   *Manifest
	// Agent is the banger-agent binary to install (see ResolveAgent).
	Agent string
	// SHA256Overrides maps an artifact name to the sha256 to expect instead
	// of the manifest's (required where the manifest's is empty).
	SHA256Overrides map[string]string
	Fetcher         Fetcher
	Progress        io.Writer // one line per step; nil for none
	Now             func() time.Time
}

// ResolveAgent picks the agent binary: the --agent flag, else banger-agent
// next to the running banger binary (build/bin or the install directory),
// else the manifest's vsock_agent_path.
func ResolveAgent(flag, exeDir string, m *Manifest) (string, error) {
	candidates := []string{}
	if flag != "" {
		if _, err := os.Stat(flag); err != nil {
			return "", fmt.Errorf("agent binary --agent %s: %w; build it with `make build`", flag, err)
		}
		return filepath.Abs(flag)
	}
	if exeDir != "" {
		candidates = append(candidates, filepath.Join(exeDir, FileAgent))
	}
	if m != nil && m.AgentPath != "" {
		candidates = append(candidates, m.AgentPath)
	}
	for _, c := range candidates {
		if fi, err := os.Stat(c); err == nil && fi.Mode().IsRegular() {
			return c, nil
		}
	}
	return "", fmt.Errorf("no banger-agent binary found (looked at %s); run `make build` or pass --agent PATH", strings.Join(candidates, ", "))
}

// Install assembles the runtime bundle in opts.RuntimeDir: it fetches every
// artifact into a temporary directory inside it, checks every sha256, and
// only then renames the files into place and writes bundle.json. On any
// error nothing of the new bundle is installed. Artifacts that cannot be
// fetched (*FetchError) or do not match (*ChecksumError) are all reported,
// joined one per line.
func Install(ctx context.Context, opts InstallOptions) (*Bundle, error) {
	m := opts.Manifest
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	say := func(format string, args ...any) {
		if opts.Progress != nil {
			fmt.Fprintf(opts.Progress, format+"\n", args...)
		}
	}
	// Every expected checksum is known before anything is fetched.
	want := map[string]string{}
	for name, sum := range opts.SHA256Overrides {
		if m.Get(name) == nil {
			return nil, fmt.Errorf("--sha256-override %s: the manifest has no [%s]; known artifacts: %s", name, name, strings.Join(ArtifactNames(), ", "))
		}
		if !ValidSHA256(sum) {
			return nil, fmt.Errorf("--sha256-override %s=%s: not 64 lowercase hex digits", name, sum)
		}
	}
	var unpinned []error
	for _, name := range bundleArtifacts() {
		a := m.Get(name)
		if a == nil {
			continue
		}
		sum := a.SHA256
		if o, ok := opts.SHA256Overrides[name]; ok {
			sum = o
		}
		if sum == "" {
			unpinned = append(unpinned, fmt.Errorf("manifest %s: [%s] has no sha256; fill it in or pass --sha256-override %s=SUM (the sha256 of %s)", m.File, name, name, a.Source()))
		}
		want[name] = sum
	}
	if len(unpinned) > 0 {
		return nil, errors.Join(unpinned...)
	}
	if opts.Agent == "" {
		return nil, errors.New("no agent binary given")
	}

	if err := os.MkdirAll(opts.RuntimeDir, 0o755); err != nil {
		return nil, fmt.Errorf("creating runtime dir: %w", err)
	}
	tmp, err := os.MkdirTemp(opts.RuntimeDir, ".install-")
	if err != nil {
		return nil, fmt.Errorf("creating a staging dir in %s: %w", opts.RuntimeDir, err)
	}
	defer os.RemoveAll(tmp)

	b := &Bundle{Format: BundleFormat, InstalledAt: now().UTC(), Manifest: m.File, Files: map[string]BundleFile{}}
	staged := map[string]string{} // role -> file name in tmp
	// Every artifact is tried, so one run names everything that cannot be
	// fetched or does not match (one line each), not one at a time.
	var failed []error
	for _, name := range bundleArtifacts() {
		a := m.Get(name)
		if a == nil {
			continue
		}
		say("fetching %s from %s", name, a.Source())
		dl := filepath.Join(tmp, name+".download")
		if err := opts.Fetcher.Fetch(ctx, name, *a, m.Dir, want[name], dl); err != nil {
			if ctx.Err() != nil {
				return nil, err
			}
			var fe *FetchError
			if errors.As(err, &fe) {
				fe.Manifest = m.File
			}
			failed = append(failed, err)
			continue
		}
		if len(failed) > 0 {
			continue
		}
		role, file := artifactFile(name)
		dst := filepath.Join(tmp, file)
		switch {
		case name == ArtifactModules:
			if err := extractTree(dl, dst); err != nil {
				return nil, fmt.Errorf("unpacking %s from %s: %w", name, a.Source(), err)
			}
		case a.Member != "":
			if err := extractMember(dl, a.Member, dst); err != nil {
				return nil, fmt.Errorf("taking %s out of %s: %w", a.Member, a.Source(), err)
			}
		default:
			if err := os.Rename(dl, dst); err != nil {
				return nil, err
			}
		}
		os.Remove(dl)
		mode := os.FileMode(0o644)
		if name == ArtifactFirecracker {
			mode = 0o755
		}
		if name != ArtifactModules {
			if err := os.Chmod(dst, mode); err != nil {
				return nil, err
			}
		}
		staged[role] = file
	}
	if len(failed) > 0 {
		return nil, errors.Join(failed...)
	}

	say("copying agent from %s", opts.Agent)
	if err := copyFile(opts.Agent, filepath.Join(tmp, FileAgent), 0o755); err != nil {
		return nil, fmt.Errorf("copying agent %s: %w", opts.Agent, err)
	}
	staged[RoleAgent] = FileAgent

	gen, err := stageKey(opts.RuntimeDir, tmp)
	if err != nil {
		return nil, err
	}
	if gen {
		say("generated SSH key %s", filepath.Join(opts.RuntimeDir, FileSSHKey))
		staged[RoleSSHKey] = FileSSHKey
	}
	staged[RoleSSHPubKey] = FileSSHPubKey

	// Record what will be in place; keys already installed are hashed where
	// they are.
	for _, role := range []string{RoleFirecracker, RoleKernel, RoleInitrd, RoleModules, RoleAgent, RoleSSHKey, RoleSSHPubKey} {
		file, ok := staged[role]
		where := tmp
		if !ok {
			if role != RoleSSHKey {
				continue
			}
			file, where = FileSSHKey, opts.RuntimeDir
		}
		sum, size, err := hashPath(filepath.Join(where, file))
		if err != nil {
			return nil, fmt.Errorf("hashing %s: %w", file, err)
		}
		b.Files[role] = BundleFile{Path: file, SHA256: sum, Size: size}
	}

	old, _, _ := ReadBundle(opts.RuntimeDir)
	if err := commit(opts.RuntimeDir, tmp, staged); err != nil {
		return nil, err
	}
	if err := writeBundle(opts.RuntimeDir, b); err != nil {
		return nil, err
	}
	// Files of the previous bundle that the new one no longer names.
	if old != nil {
		for _, f := range old.Files {
			if !bundleNames(b, f.Path) {
				os.RemoveAll(filepath.Join(opts.RuntimeDir, f.Path))
			}
		}
	}
	return b, nil
}

// bundleArtifacts are the manifest tables that become bundle files.
func bundleArtifacts() []string {
	return []string{ArtifactFirecracker, ArtifactKernel, ArtifactInitrd, ArtifactModules}
}

func artifactFile(name string) (role, file string) {
	switch name {
	case ArtifactFirecracker:
		return RoleFirecracker, FileFirecracker
	case ArtifactKernel:
		return RoleKernel, FileKernel
	case ArtifactInitrd:
		return RoleInitrd, FileInitrd
	default:
		return RoleModules, FileModules
	}
}

func bundleNames(b *Bundle, path string) bool {
	for _, f := range b.Files {
		if f.Path == path {
			return true
		}
	}
	return false
}

// commit renames the staged files into dir. A directory already in place
// (modules) is moved aside into tmp first and removed with it.
func commit(dir, tmp string, staged map[string]string) error {
	for _, file := range staged {
		dst := filepath.Join(dir, file)
		if fi, err := os.Lstat(dst); err == nil && fi.IsDir() {
			if err := os.Rename(dst, filepath.Join(tmp, file+".old")); err != nil {
				return fmt.Errorf("moving old %s aside: %w", dst, err)
			}
		}
		if err := os.Rename(filepath.Join(tmp, file), dst); err != nil {
			return fmt.Errorf("installing %s: %w", dst, err)
		}
	}
	return nil
}

// stageKey writes the public key (and, when dir has no private key yet, a
// new ed25519 key pair) into tmp. It reports whether a key was generated.
func stageKey(dir, tmp string) (bool, error) {
	privPath := filepath.Join(dir, FileSSHKey)
	raw, err := os.ReadFile(privPath)
	switch {
	case err == nil:
		signer, err := ssh.ParsePrivateKey(raw)
		if err != nil {
			return false, fmt.Errorf("reading SSH key %s: %w; move it away to have a new one generated", privPath, err)
		}
		pub := ssh.MarshalAuthorizedKey(signer.PublicKey())
		if err := os.WriteFile(filepath.Join(tmp, FileSSHPubKey), pub, 0o644); err != nil {
			return false, err
		}
		return false, nil
	case !errors.Is(err, os.ErrNotExist):
		return false, fmt.Errorf("reading SSH key %s: %w", privPath, err)
	}
	priv, pub, err := GenerateKey("banger")
	if err != nil {
		return false, err
	}
	if err := os.WriteFile(filepath.Join(tmp, FileSSHKey), priv, 0o600); err != nil {
		return false, err
	}
	if err := os.WriteFile(filepath.Join(tmp, FileSSHPubKey), pub, 0o644); err != nil {
		return false, err
	}
	return true, nil
}

// GenerateKey returns a new ed25519 key pair: the private key in OpenSSH
// format and the public key as an authorized_keys line.
func GenerateKey(comment string) (priv, pub []byte, err error) {
	pk, sk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generating ed25519 key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(sk, comment)
	if err != nil {
		return nil, nil, fmt.Errorf("encoding private key: %w", err)
	}
	sshPub, err := ssh.NewPublicKey(pk)
	if err != nil {
		return nil, nil, fmt.Errorf("encoding public key: %w", err)
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub))) + " " + comment + "\n"
	return pem.EncodeToMemory(block), []byte(line), nil
}
