package image

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"
)

// Artifact is one downloadable piece of the runtime bundle as the manifest
// names it: exactly one of URL (https://, or file:// relative to the
// manifest) or Path (relative to the manifest), the sha256 of what is
// fetched, and optionally the member of a tar or tar.gz archive to take.
type Artifact struct {
	URL    string `toml:"url" json:"url,omitempty"`
	Path   string `toml:"path" json:"path,omitempty"`
	SHA256 string `toml:"sha256" json:"sha256"`
	Member string `toml:"member" json:"member,omitempty"`
}

// Source is where the artifact comes from, as written.
func (a Artifact) Source() string {
	if a.URL != "" {
		return a.URL
	}
	return a.Path
}

// Manifest is runtime-bundle.toml.
type Manifest struct {
	Firecracker *Artifact `toml:"firecracker"`
	Kernel      *Artifact `toml:"kernel"`
	Initrd      *Artifact `toml:"initrd"`
	Modules     *Artifact `toml:"modules"` // a tar or tar.gz of the modules tree
	VoidRootfs  *Artifact `toml:"void_rootfs"`

	// AgentPath is a last-resort agent binary (after --agent and the one
	// next to the banger binary). Legacy name: vsock_ping_helper_path.
	AgentPath       string `toml:"vsock_agent_path"`
	LegacyAgentPath string `toml:"vsock_ping_helper_path"`

	File string `toml:"-"` // the manifest's own path
	Dir  string `toml:"-"` // its directory; relative sources resolve against it
}

// Artifact names in the manifest.
const (
	ArtifactFirecracker = "firecracker"
	ArtifactKernel      = "kernel"
	ArtifactInitrd      = "initrd"
	ArtifactModules     = "modules"
	ArtifactVoidRootfs  = "void_rootfs"
)

// ArtifactNames lists the manifest's artifact tables in install order.
func ArtifactNames() []string {
	return []string{ArtifactFirecracker, ArtifactKernel, ArtifactInitrd, ArtifactModules, ArtifactVoidRootfs}
}

// Get returns the named artifact, nil when the manifest has none.
func (m *Manifest) Get(name string) *Artifact {
	switch name {
	case ArtifactFirecracker:
		return m.Firecracker
	case ArtifactKernel:
		return m.Kernel
	case ArtifactInitrd:
		return m.Initrd
	case ArtifactModules:
		return m.Modules
	case ArtifactVoidRootfs:
		return m.VoidRootfs
	}
	return nil
}

// ValidSHA256 reports whether s is 64 lowercase hex digits.
func ValidSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// LoadManifest reads and checks a runtime-bundle.toml. The legacy key
// vsock_ping_helper_path is accepted with a warning naming vsock_agent_path.
func LoadManifest(path string) (*Manifest, []string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, nil, fmt.Errorf("locating manifest %q: %w", path, err)
	}
	raw, err := os.ReadFile(abs)
	if err != nil {
		return nil, nil, fmt.Errorf("reading manifest: %w (give one with --manifest)", err)
	}
	var m Manifest
	md, err := toml.Decode(string(raw), &m)
	if err != nil {
		return nil, nil, fmt.Errorf("parsing manifest %s: %w", abs, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, 0, len(und))
		for _, k := range und {
			keys = append(keys, k.String())
		}
		sort.Strings(keys)
		return nil, nil, fmt.Errorf("manifest %s: unknown key %s; known tables are %s", abs, keys[0], strings.Join(ArtifactNames(), ", "))
	}
	m.File, m.Dir = abs, filepath.Dir(abs)
	var warnings []string
	if m.LegacyAgentPath != "" {
		if m.AgentPath != "" && m.AgentPath != m.LegacyAgentPath {
			return nil, nil, fmt.Errorf("manifest %s: vsock_agent_path and its legacy name vsock_ping_helper_path disagree; keep vsock_agent_path", abs)
		}
		m.AgentPath = m.LegacyAgentPath
		m.LegacyAgentPath = ""
		warnings = append(warnings, fmt.Sprintf("manifest %s: vsock_ping_helper_path is the legacy name of vsock_agent_path", abs))
	}
	if m.AgentPath != "" && !filepath.IsAbs(m.AgentPath) {
		m.AgentPath = filepath.Join(m.Dir, m.AgentPath)
	}
	for _, name := range ArtifactNames() {
		a := m.Get(name)
		if a == nil {
			continue
		}
		if (a.URL == "") == (a.Path == "") {
			return nil, nil, fmt.Errorf("manifest %s: [%s] needs exactly one of url or path", abs, name)
		}
		if a.URL != "" && !strings.HasPrefix(a.URL, "https://") && !strings.HasPrefix(a.URL, "file://") {
			return nil, nil, fmt.Errorf("manifest %s: [%s] url %q must start with https:// or file://", abs, name, a.URL)
		}
		if a.SHA256 != "" && !ValidSHA256(a.SHA256) {
			return nil, nil, fmt.Errorf("manifest %s: [%s] sha256 %q is not 64 lowercase hex digits", abs, name, a.SHA256)
		}
	}
	if m.Firecracker == nil || m.Kernel == nil {
		return nil, nil, fmt.Errorf("manifest %s: [firecracker] and [kernel] are required", abs)
	}
	return &m, warnings, nil
}

// localPath resolves a path or file:// source against the manifest's
// directory; ok is false for a remote URL.
func localPath(src, dir string) (string, bool) {
	p := src
	if strings.HasPrefix(src, "file://") {
		p = strings.TrimPrefix(src, "file://")
	} else if strings.Contains(src, "://") {
		return "", false
	}
	if !filepath.IsAbs(p) {
		p = filepath.Join(dir, p)
	}
	return p, true
}

// ManifestName is the manifest's file name, in a checkout and installed.
const ManifestName = "runtime-bundle.toml"

// FindManifest picks the manifest `banger runtime install` uses: flag when
// given, else runtime-bundle.toml in cwd, else the one of the checkout whose
// build/bin holds the banger binary (exeDir), else the one `make install`
// put beside the binaries ($PREFIX/share/banger for $PREFIX/bin).
func FindManifest(flag, cwd, exeDir string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	var cands []string
	if cwd != "" {
		cands = append(cands, filepath.Join(cwd, ManifestName))
	}
	if exeDir != "" {
		if filepath.Base(exeDir) == "bin" && filepath.Base(filepath.Dir(exeDir)) == "build" {
			cands = append(cands, filepath.Join(exeDir, "..", "..", ManifestName))
		}
		cands = append(cands, filepath.Join(exeDir, "..", "share", "banger", ManifestName))
	}
	for _, c := range cands {
		if fi, err := os.Stat(c); err == nil && fi.Mode().IsRegular() {
			return filepath.Clean(c), nil
		}
	}
	for i, c := range cands {
		cands[i] = filepath.Clean(c)
	}
	return "", fmt.Errorf("no %s found (looked at %s); pass --manifest FILE, or run `make install` in the banger checkout, which installs it beside the binaries", ManifestName, strings.Join(cands, ", "))
}
