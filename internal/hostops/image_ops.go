package hostops

// Image build operations: debootstrap a Debian tree, customize it with the
// images/debian scripts chrooted inside it, and write it into an ext4 image
// with mkfs.ext4 -d (no mount).
//
// The tree lives in a staging directory that only these ops create:
// /var/tmp/banger-build-<16 hex>, root-owned 0700, holding an `owner` file
// with the caller's uid and the tree under `root/`. Later ops accept a
// staging path only when it has that shape and belongs to the same caller.
//
// Root runs only scripts it trusts: the root-owned copy installed next to the
// helper binary (`make install-helper` puts images/ in its directory), or,
// when the caller is root itself (a root daemon), the scripts directory the
// caller names. Files the caller supplies (the agent binary, kernel modules,
// the output image) must lie under the caller's banger directories and are
// resolved beneath them by descriptor (callerfs.go): the caller's, regular,
// one link; the public key travels as text and is parsed.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"banger/internal/beneath"
	"banger/internal/command"
)

const (
	// StagingBase is where build staging directories are made.
	StagingBase = "/var/tmp"
	// DebianSuite is the Debian release images are built from.
	DebianSuite = "bookworm"
	// DebianSourcesFile is the deb822 sources file the mirror is read from.
	DebianSourcesFile = "/etc/apt/sources.list.d/debian.sources"
	// DebianSourcesList is the one-line-format fallback.
	DebianSourcesList = "/etc/apt/sources.list"
	// ImageScriptsDir is the name of the scripts directory installed next to
	// the helper binary.
	ImageScriptsDir = "images"
	minImageSize    = 512 << 20
	maxImageSize    = 1 << 40
)

// Compiled on first use: counted repetitions compile slowly, and every
// banger command (this package is linked into the CLI) would pay at start.
var (
	stagingRe = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^/var/tmp/banger-build-[0-9a-f]{16}$`) })
	labelRe   = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[a-z0-9-]{1,16}$`) })
)

// ErrNoDebootstrap is returned when debootstrap is not installed.
var ErrNoDebootstrap = errors.New("debootstrap not found; install it with `apt-get install debootstrap`")

// Argument and result types of the image ops.
type (
	// DebootstrapArgs start a build. Mirror is empty in normal use: the op
	// reads it from the host's apt sources.
	DebootstrapArgs struct {
		Suite string `json:"suite"`
	}
	DebootstrapResult struct {
		Staging string `json:"staging"`
		Mirror  string `json:"mirror"`
	}
	CustomizeArgs struct {
		Staging       string `json:"staging"`
		ScriptsDir    string `json:"scripts_dir,omitempty"` // honoured only for a root caller
		AgentPath     string `json:"agent_path"`
		AuthorizedKey string `json:"authorized_key"`
		ModulesDir    string `json:"modules_dir,omitempty"`
	}
	CustomizeResult struct {
		PackagesHash string `json:"packages_hash"`
		ScriptsDir   string `json:"scripts_dir"`
	}
	MkfsArgs struct {
		Staging   string `json:"staging"`
		Out       string `json:"out"` // an existing regular file of the caller's
		SizeBytes int64  `json:"size_bytes"`
		Label     string `json:"label"`
	}
	StagingArgs struct {
		Staging string `json:"staging"`
	}
)

func addImageOps(m map[string]opFunc) {
	m["image-debootstrap"] = opImageDebootstrap
	m["image-customize"] = opImageCustomize
	m["image-mkfs"] = opImageMkfs
	m["image-remove-staging"] = opImageRemoveStaging
}

// ImageDebootstrap makes a staging directory and debootstraps a minbase
// Debian tree into it.
func (c *Client) ImageDebootstrap(ctx context.Context, a DebootstrapArgs) (DebootstrapResult, error) {
	var r DebootstrapResult
	err := c.call(ctx, "image-debootstrap", a, &r)
	return r, err
}

// ImageCustomize runs images/debian/customize.sh chrooted in the staging tree.
func (c *Client) ImageCustomize(ctx context.Context, a CustomizeArgs) (CustomizeResult, error) {
	var r CustomizeResult
	err := c.call(ctx, "image-customize", a, &r)
	return r, err
}

// ImageMkfs writes the staging tree into the caller's file a.Out as ext4.
func (c *Client) ImageMkfs(ctx context.Context, a MkfsArgs) error {
	return c.call(ctx, "image-mkfs", a, nil)
}

// ImageRemoveStaging removes a staging directory.
func (c *Client) ImageRemoveStaging(ctx context.Context, staging string) error {
	return c.call(ctx, "image-remove-staging", StagingArgs{Staging: staging}, nil)
}

func opImageDebootstrap(ctx context.Context, c Caller, raw json.RawMessage) (any, error) {
	var a DebootstrapArgs
	if err := decode("image-debootstrap", raw, &a); err != nil {
		return nil, err
	}
	if a.Suite != DebianSuite {
		return nil, fmt.Errorf("%w: suite %q: only %s is supported", ErrRefused, a.Suite, DebianSuite)
	}
	bin, err := findDebootstrap()
	if err != nil {
		return nil, err
	}
	mirror, err := DebianMirror([]string{DebianSourcesFile, DebianSourcesList}, a.Suite)
	if err != nil {
		return nil, err
	}
	staging, err := makeStaging(c)
	if err != nil {
		return nil, err
	}
	tree := filepath.Join(staging, "root")
	if out, err := runLogged(ctx, nil, bin, "--variant=minbase", a.Suite, tree, mirror); err != nil {
		os.RemoveAll(staging)
		return nil, fmt.Errorf("debootstrap %s from %s: %w%s", a.Suite, mirror, err, out)
	}
	return DebootstrapResult{Staging: staging, Mirror: mirror}, nil
}

func opImageCustomize(ctx context.Context, c Caller, raw json.RawMessage) (any, error) {
	var a CustomizeArgs
	if err := decode("image-customize", raw, &a); err != nil {
		return nil, err
	}
	staging, err := checkStaging(c, a.Staging)
	if err != nil {
		return nil, err
	}
	key, err := checkAuthorizedKey(a.AuthorizedKey)
	if err != nil {
		return nil, err
	}
	scripts, err := trustedScripts(c, a.ScriptsDir)
	if err != nil {
		return nil, err
	}
	cf := c.files()
	defer cf.Close()
	agent, err := cf.open(a.AgentPath, unix.O_RDONLY)
	if err != nil {
		return nil, fmt.Errorf("agent binary: %w", err)
	}
	defer agent.Close()
	var modules *beneath.Dir
	if a.ModulesDir != "" {
		if modules, err = cf.openDir(a.ModulesDir); err != nil {
			return nil, fmt.Errorf("kernel modules: %w", err)
		}
		defer modules.Close()
	}

	// The staging tree is root's (debootstrap made it); paths in it are
	// root's own.
	tree := filepath.Join(staging, "root")
	in := filepath.Join(tree, "tmp", "banger-build")
	if err := os.RemoveAll(in); err != nil {
		return nil, fmt.Errorf("clearing %s: %w", in, err)
	}
	if err := os.MkdirAll(in, 0o700); err != nil {
		return nil, fmt.Errorf("creating %s: %w", in, err)
	}
	if err := copyFileFrom(agent, filepath.Join(in, "banger-agent"), 0o755); err != nil {
		return nil, fmt.Errorf("copying the agent into the image: %w", err)
	}
	if err := os.WriteFile(filepath.Join(in, "authorized_keys"), []byte(key), 0o600); err != nil {
		return nil, fmt.Errorf("writing authorized_keys: %w", err)
	}
	pkgs, err := os.ReadFile(filepath.Join(scripts, "packages.apt"))
	if err != nil {
		return nil, fmt.Errorf("reading the package list: %w", err)
	}
	if err := os.WriteFile(filepath.Join(in, "packages.apt"), pkgs, 0o600); err != nil {
		return nil, fmt.Errorf("writing packages.apt: %w", err)
	}
	if modules != nil {
		if err := copyModules(modules, filepath.Join(tree, "lib", "modules")); err != nil {
			return nil, err
		}
	}
	script, err := os.ReadFile(filepath.Join(scripts, "debian", "customize.sh"))
	if err != nil {
		return nil, fmt.Errorf("reading customize.sh: %w", err)
	}
	if err := os.WriteFile(filepath.Join(in, "customize.sh"), script, 0o700); err != nil {
		return nil, fmt.Errorf("writing customize.sh: %w", err)
	}
	enter := filepath.Join(scripts, "debian", "enter-chroot.sh")
	if out, err := runLogged(ctx, nil, "bash", enter, tree, "/bin/bash", "/tmp/banger-build/customize.sh"); err != nil {
		return nil, fmt.Errorf("customizing the image (images/debian/customize.sh): %w%s", err, out)
	}
	sum := sha256.Sum256(pkgs)
	return CustomizeResult{PackagesHash: hex.EncodeToString(sum[:]), ScriptsDir: scripts}, nil
}

func opImageMkfs(ctx context.Context, c Caller, raw json.RawMessage) (any, error) {
	var a MkfsArgs
	if err := decode("image-mkfs", raw, &a); err != nil {
		return nil, err
	}
	staging, err := checkStaging(c, a.Staging)
	if err != nil {
		return nil, err
	}
	if a.SizeBytes < minImageSize || a.SizeBytes > maxImageSize || a.SizeBytes%4096 != 0 {
		return nil, fmt.Errorf("%w: image size %d: use a multiple of 4 KiB between 512 MiB and 1 TiB", ErrRefused, a.SizeBytes)
	}
	if !labelRe().MatchString(a.Label) {
		return nil, fmt.Errorf("%w: filesystem label %q", ErrRefused, a.Label)
	}
	out, err := openOwned(c, a.Out, true) // the caller's, one link
	if err != nil {
		return nil, err
	}
	defer out.Close()
	if err := out.Truncate(0); err != nil {
		return nil, fmt.Errorf("truncating %s: %w", a.Out, err)
	}
	// mkfs gets the file by descriptor, never by the caller's path.
	said, _, err := command.Cmd{
		Name: "mkfs.ext4",
		Args: []string{"-F", "-q", "-L", a.Label, "-d", filepath.Join(staging, "root"),
			"/dev/fd/3", strconv.FormatInt(a.SizeBytes>>10, 10) + "k"},
		ExtraFiles: []*os.File{out},
		Combined:   true,
	}.Run(ctx)
	if err != nil {
		return nil, fmt.Errorf("mkfs.ext4 -d into %s: %w: %s", a.Out, errors.Unwrap(err), trim(string(said)))
	}
	return nil, nil
}

func opImageRemoveStaging(ctx context.Context, c Caller, raw json.RawMessage) (any, error) {
	var a StagingArgs
	if err := decode("image-remove-staging", raw, &a); err != nil {
		return nil, err
	}
	staging, err := checkStaging(c, a.Staging)
	if err != nil {
		return nil, err
	}
	if err := os.RemoveAll(staging); err != nil {
		return nil, fmt.Errorf("removing %s: %w", staging, err)
	}
	return nil, nil
}

func findDebootstrap() (string, error) {
	if p, err := command.LookPath("debootstrap"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/debootstrap", "/sbin/debootstrap"} {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", ErrNoDebootstrap
}

// DebianMirror returns the first mirror URI serving suite in the given apt
// source files: deb822 stanzas (`URIs:` of a stanza whose `Suites:` lists
// suite) or one-line `deb URI suite ...` entries. Missing files are skipped.
func DebianMirror(files []string, suite string) (string, error) {
	for _, f := range files {
		b, err := os.ReadFile(f)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("reading apt sources %s: %w", f, err)
		}
		if m := mirrorIn(string(b), suite); m != "" {
			return m, nil
		}
	}
	return "", fmt.Errorf("no Debian mirror for %s in %s; add a `Suites: %s` stanza with `URIs:` to %s", suite, strings.Join(files, " or "), suite, DebianSourcesFile)
}

func mirrorIn(text, suite string) string {
	okURI := func(u string) bool {
		return strings.HasPrefix(u, "http://") || strings.HasPrefix(u, "https://") || strings.HasPrefix(u, "file:/")
	}
	// deb822: stanzas separated by blank lines.
	for _, stanza := range strings.Split(strings.ReplaceAll(text, "\r\n", "\n"), "\n\n") {
		fields := map[string]string{}
		for _, line := range strings.Split(stanza, "\n") {
			if strings.HasPrefix(strings.TrimSpace(line), "#") {
				continue
			}
			k, v, ok := strings.Cut(line, ":")
			if ok && !strings.ContainsAny(k, " \t") {
				fields[strings.ToLower(k)] = strings.TrimSpace(v)
			}
		}
		if fields["enabled"] == "no" || !hasWord(fields["types"], "deb") || !hasWord(fields["suites"], suite) {
			continue
		}
		for _, u := range strings.Fields(fields["uris"]) {
			if okURI(u) {
				return strings.TrimRight(u, "/")
			}
		}
	}
	// one-line format: deb [options] URI suite components...
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != "deb" {
			continue
		}
		f = f[1:]
		if strings.HasPrefix(f[0], "[") {
			for len(f) > 0 && !strings.HasSuffix(f[0], "]") {
				f = f[1:]
			}
			if len(f) > 0 {
				f = f[1:]
			}
		}
		if len(f) >= 2 && f[1] == suite && okURI(f[0]) {
			return strings.TrimRight(f[0], "/")
		}
	}
	return ""
}

func hasWord(list, w string) bool {
	for _, f := range strings.Fields(list) {
		if f == w {
			return true
		}
	}
	return false
}

// makeStaging creates a fresh root-owned staging directory for c.
func makeStaging(c Caller) (string, error) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("naming a staging directory: %w", err)
	}
	dir := filepath.Join(StagingBase, "banger-build-"+hex.EncodeToString(b))
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", fmt.Errorf("creating staging directory %s: %w", dir, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "owner"), []byte(strconv.Itoa(c.UID)+"\n"), 0o600); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("writing %s/owner: %w", dir, err)
	}
	return dir, nil
}

// checkStaging accepts only a staging directory made by makeStaging for
// the same caller.
func checkStaging(c Caller, p string) (string, error) {
	if !stagingRe().MatchString(p) {
		return "", fmt.Errorf("%w: %q is not a banger build staging directory", ErrRefused, p)
	}
	fi, err := os.Lstat(p)
	if err != nil {
		return "", fmt.Errorf("%w: staging directory %s: %v", ErrRefused, p, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || !ok || st.Uid != 0 || fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("%w: staging directory %s is not a root-owned 0700 directory", ErrRefused, p)
	}
	owner, err := os.ReadFile(filepath.Join(p, "owner"))
	if err != nil || strings.TrimSpace(string(owner)) != strconv.Itoa(c.UID) {
		return "", fmt.Errorf("%w: staging directory %s belongs to another user", ErrRefused, p)
	}
	return p, nil
}

// checkAuthorizedKey parses one OpenSSH public key line and returns it in
// canonical form.
func checkAuthorizedKey(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" || strings.ContainsAny(s, "\n\r") || len(s) > 16<<10 {
		return "", fmt.Errorf("%w: the authorized key must be one OpenSSH public key line", ErrRefused)
	}
	pub, comment, _, rest, err := ssh.ParseAuthorizedKey([]byte(s))
	if err != nil || len(bytes.TrimSpace(rest)) != 0 {
		return "", fmt.Errorf("%w: authorized key is not an OpenSSH public key: %v", ErrRefused, err)
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
	if comment != "" && !strings.ContainsAny(comment, "\n\r") {
		line += " " + comment
	}
	return line + "\n", nil
}

// helperExecutable locates this binary, next to which the trusted scripts
// are installed (tests point it at a root-owned copy).
var helperExecutable = os.Executable

// trustedScripts returns the scripts directory root may run: a root
// caller's own choice, else the copy installed next to this binary, which
// must be root-owned and writable by no one else along its whole path.
func trustedScripts(c Caller, requested string) (string, error) {
	var dir string
	if c.UID == 0 && requested != "" {
		if !filepath.IsAbs(requested) {
			return "", fmt.Errorf("%w: scripts directory %q must be absolute", ErrRefused, requested)
		}
		dir = filepath.Clean(requested)
	} else {
		exe, err := helperExecutable()
		if err != nil {
			return "", fmt.Errorf("locating the helper binary: %w", err)
		}
		if exe, err = filepath.EvalSymlinks(exe); err != nil {
			return "", fmt.Errorf("locating the helper binary: %w", err)
		}
		dir = filepath.Join(filepath.Dir(exe), ImageScriptsDir)
		for _, p := range []string{dir, filepath.Join(dir, "debian"), filepath.Join(dir, "packages.apt"),
			filepath.Join(dir, "debian", "customize.sh"), filepath.Join(dir, "debian", "enter-chroot.sh")} {
			if err := rootOnly(p); err != nil {
				return "", fmt.Errorf("%w: image build scripts next to the helper: %v; install them with `sudo make install-helper`", ErrRefused, err)
			}
		}
	}
	for _, f := range []string{"packages.apt", "debian/customize.sh", "debian/enter-chroot.sh"} {
		if fi, err := os.Stat(filepath.Join(dir, f)); err != nil || !fi.Mode().IsRegular() {
			return "", fmt.Errorf("image build scripts: %s is missing in %s", f, dir)
		}
	}
	return dir, nil
}

// rootOnly checks that p and every directory above it are owned by root and
// not writable by group or others (sticky directories excepted above p).
func rootOnly(p string) error {
	first := true
	for cur := p; ; cur = filepath.Dir(cur) {
		fi, err := os.Lstat(cur)
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok || st.Uid != 0 {
			return fmt.Errorf("%s is not owned by root", cur)
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			return fmt.Errorf("%s is a symlink", cur)
		}
		if fi.Mode().Perm()&0o022 != 0 && (first || fi.Mode()&fs.ModeSticky == 0) {
			return fmt.Errorf("%s is writable by group or others", cur)
		}
		first = false
		if cur == "/" {
			return nil
		}
	}
}

// copyFileFrom writes the content of the open file src to a new file dst.
func copyFileFrom(src *os.File, dst string, mode os.FileMode) error {
	fi, err := src.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", src.Name())
	}
	df, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|unix.O_NOFOLLOW, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(df, src); err != nil {
		df.Close()
		return err
	}
	if err := df.Chmod(mode); err != nil {
		df.Close()
		return err
	}
	return df.Close()
}

// runLogged runs a long build command and, on failure, returns the tail of
// its combined output formatted for an error message.
func runLogged(ctx context.Context, env []string, name string, args ...string) (string, error) {
	tail, _, err := command.Cmd{Name: name, Args: args, Env: env, Tail: 20}.Run(ctx)
	if err != nil {
		return "\n" + string(tail), errors.Unwrap(err)
	}
	return "", nil
}
