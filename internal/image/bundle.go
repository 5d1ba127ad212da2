// Package image builds, verifies and supplies what a VM boots: the runtime
// bundle (Firecracker, guest kernel, agent, SSH key) and guest root images.
package image

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Names of the files of a runtime bundle.
const (
	FileFirecracker = "firecracker"
	FileKernel      = "vmlinux"
	FileInitrd      = "initrd.img"
	FileModules     = "modules"
	FileAgent       = "banger-agent"
	FileSSHKey      = "id_ed25519"
	FileSSHPubKey   = "id_ed25519.pub"
	FileBundleJSON  = "bundle.json"

	// LegacyFileAgent is the agent's file name in bundles made by earlier
	// banger builds.
	LegacyFileAgent = "banger-vsock-pingd"
)

// Roles of the files in bundle.json. They are the config keys the files
// back, so a bundle reads like the config it replaces.
const (
	RoleFirecracker = "firecracker_bin"
	RoleKernel      = "kernel_path"
	RoleInitrd      = "initrd_path"
	RoleModules     = "modules_dir"
	RoleAgent       = "vsock_agent_path"
	RoleSSHKey      = "ssh_key_path"
	RoleSSHPubKey   = "ssh_public_key"

	// LegacyRoleAgent is the agent's role in bundle.json files and
	// manifests of earlier banger builds.
	LegacyRoleAgent = "vsock_ping_helper_path"
)

// BundleFormat is the version of bundle.json this package writes.
const BundleFormat = 1

// BundleFile is one file of an installed bundle.
type BundleFile struct {
	Path   string `json:"path"`   // relative to the bundle directory
	SHA256 string `json:"sha256"` // of the file; of the sorted tree listing for a directory
	Size   int64  `json:"size"`
}

// Bundle is bundle.json: what `banger runtime install` put in runtime_dir.
type Bundle struct {
	Format      int                   `json:"format"`
	InstalledAt time.Time             `json:"installed_at"`
	Manifest    string                `json:"manifest,omitempty"` // the manifest it was installed from
	Files       map[string]BundleFile `json:"files"`              // role -> file
}

// roleOrder is the order files are listed in.
func roleOrder() []string {
	return []string{RoleFirecracker, RoleKernel, RoleInitrd, RoleModules, RoleAgent, RoleSSHKey, RoleSSHPubKey}
}

// Roles returns the roles of b in a stable order.
func (b *Bundle) Roles() []string {
	var out []string
	seen := map[string]bool{}
	for _, r := range roleOrder() {
		if _, ok := b.Files[r]; ok {
			out = append(out, r)
			seen[r] = true
		}
	}
	var rest []string
	for r := range b.Files {
		if !seen[r] {
			rest = append(rest, r)
		}
	}
	sort.Strings(rest)
	return append(out, rest...)
}

// ReadBundle reads dir/bundle.json. Earlier bundles are accepted: the role
// vsock_ping_helper_path and an agent file named banger-vsock-pingd each add
// one warning naming the new name.
func ReadBundle(dir string) (*Bundle, []string, error) {
	path := filepath.Join(dir, FileBundleJSON)
	raw, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil, fmt.Errorf("no runtime bundle in %s (%s is missing); install one with `banger runtime install`", dir, FileBundleJSON)
		}
		return nil, nil, fmt.Errorf("reading %s: %w", path, err)
	}
	var b Bundle
	if err := json.Unmarshal(raw, &b); err != nil {
		return nil, nil, fmt.Errorf("parsing %s: %w; reinstall with `banger runtime install`", path, err)
	}
	if b.Format > BundleFormat {
		return nil, nil, fmt.Errorf("%s has format %d, newer than this banger understands (%d); upgrade banger", path, b.Format, BundleFormat)
	}
	if b.Files == nil {
		b.Files = map[string]BundleFile{}
	}
	var warnings []string
	if f, ok := b.Files[LegacyRoleAgent]; ok {
		if _, both := b.Files[RoleAgent]; both {
			return nil, nil, fmt.Errorf("%s names the agent twice (%s and its legacy name %s); keep %s", path, RoleAgent, LegacyRoleAgent, RoleAgent)
		}
		delete(b.Files, LegacyRoleAgent)
		b.Files[RoleAgent] = f
		warnings = append(warnings, fmt.Sprintf("%s: %s is the legacy name of %s", path, LegacyRoleAgent, RoleAgent))
	}
	if f, ok := b.Files[RoleAgent]; ok && filepath.Base(f.Path) == LegacyFileAgent {
		warnings = append(warnings, fmt.Sprintf("%s: the agent file %s has its legacy name; it is now %s (reinstall with `banger runtime install`)", dir, LegacyFileAgent, FileAgent))
	}
	for role, f := range b.Files {
		if f.Path == "" || filepath.IsAbs(f.Path) || strings.HasPrefix(filepath.Clean(f.Path), "..") {
			return nil, nil, fmt.Errorf("%s: %s has path %q; paths must be relative to the bundle directory", path, role, f.Path)
		}
	}
	return &b, warnings, nil
}

// writeBundle writes b as dir/bundle.json.
func writeBundle(dir string, b *Bundle) error {
	raw, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding %s: %w", FileBundleJSON, err)
	}
	path := filepath.Join(dir, FileBundleJSON)
	if err := os.WriteFile(path, append(raw, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// FileStatus is one file of an installed bundle as found on disk.
type FileStatus struct {
	Role     string `json:"role"`
	Path     string `json:"path"`
	Size     int64  `json:"size"`
	SHA256   string `json:"sha256"`           // recorded in bundle.json
	Actual   string `json:"actual,omitempty"` // computed now
	Status   string `json:"status"`           // ok, mismatch, missing
	Problems string `json:"problem,omitempty"`
}

// Status values of FileStatus.
const (
	StatusOK       = "ok"
	StatusMismatch = "mismatch"
	StatusMissing  = "missing"
)

// Inspect checks every file bundle.json names against its recorded sha256.
func Inspect(dir string, b *Bundle) []FileStatus {
	var out []FileStatus
	for _, role := range b.Roles() {
		f := b.Files[role]
		st := FileStatus{Role: role, Path: filepath.Join(dir, f.Path), SHA256: f.SHA256}
		sum, size, err := hashPath(st.Path)
		switch {
		case errors.Is(err, os.ErrNotExist):
			st.Status = StatusMissing
		case err != nil:
			st.Status = StatusMismatch
			st.Problems = err.Error()
		default:
			st.Size, st.Actual = size, sum
			st.Status = StatusOK
			if sum != f.SHA256 {
				st.Status = StatusMismatch
			}
		}
		out = append(out, st)
	}
	return out
}

// hashPath returns the sha256 and size of a file, or for a directory the
// sha256 of its tree (see hashTree) and the total size of its files.
func hashPath(path string) (string, int64, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", 0, err
	}
	if fi.IsDir() {
		return hashTree(path)
	}
	return hashFile(path)
}

func hashFile(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, fmt.Errorf("hashing %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// hashTree hashes a directory as the sorted lines "<sha256>  <relpath>" of
// its regular files and "link -> target" of its symlinks.
func hashTree(root string) (string, int64, error) {
	var lines []string
	var total int64
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		switch {
		case d.Type()&os.ModeSymlink != 0:
			t, err := os.Readlink(p)
			if err != nil {
				return err
			}
			lines = append(lines, fmt.Sprintf("link  %s -> %s", rel, t))
		case d.Type().IsRegular():
			sum, n, err := hashFile(p)
			if err != nil {
				return err
			}
			total += n
			lines = append(lines, fmt.Sprintf("%s  %s", sum, rel))
		}
		return nil
	})
	if err != nil {
		return "", 0, fmt.Errorf("hashing tree %s: %w", root, err)
	}
	sort.Strings(lines)
	h := sha256.Sum256([]byte(strings.Join(lines, "\n")))
	return hex.EncodeToString(h[:]), total, nil
}
