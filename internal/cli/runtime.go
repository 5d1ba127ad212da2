//go:build !banger_front

package cli

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/client"
	"banger/internal/config"
	"banger/internal/image"
)

// addRuntimeCommands registers `runtime install|show` and `image build|verify`.
func (a *app) addRuntimeCommands(root *cobra.Command) {
	rt := &cobra.Command{
		Use:   "runtime",
		Short: "Install and inspect the runtime bundle (Firecracker, guest kernel, agent, SSH key)",
	}
	if a.wants("runtime") {
		rt.AddCommand(a.runtimeInstallCmd(), a.runtimeShowCmd())
		root.AddCommand(rt)
	}
	if !a.wants("image", "images") {
		return
	}
	var img *cobra.Command
	for _, c := range root.Commands() {
		if c.Name() == "image" {
			img = c
		}
	}
	if img == nil {
		img = &cobra.Command{Use: "image", Short: "Build, register, verify, list and delete guest images"}
		root.AddCommand(img)
	}
	build := &cobra.Command{
		Use:   "build",
		Short: "Build a guest image and register it",
	}
	build.AddCommand(a.imageBuildVoidCmd())
	a.addImageBuildDebian(build)
	img.AddCommand(build, a.imageVerifyCmd())
}

// exeDir is the directory of the running banger binary ("" if unknown).
func exeDir() string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	if r, err := filepath.EvalSymlinks(exe); err == nil {
		exe = r
	}
	return filepath.Dir(exe)
}

// findManifest returns the manifest to use (see image.FindManifest).
func findManifest(flag string) (string, error) {
	cwd, _ := os.Getwd()
	return image.FindManifest(flag, cwd, exeDir())
}

// manifestArtifacts lists the tables m has, in install order.
func manifestArtifacts(m *image.Manifest) []string {
	var out []string
	for _, n := range image.ArtifactNames() {
		if m.Get(n) != nil {
			out = append(out, n)
		}
	}
	return out
}

func fileExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

func (a *app) runtimeInstallCmd() *cobra.Command {
	var manifest, agent string
	var overrides []string
	cmd := &cobra.Command{
		Use:   "install [--manifest runtime-bundle.toml] [--agent PATH]",
		Short: "Fetch, check and install the runtime bundle into runtime_dir",
		Long: `Fetches every artifact the manifest names (https URLs or local paths), checks each
against its sha256, and only then puts the files into runtime_dir with a bundle.json naming
each with its sha256. A mismatch or an unreachable URL installs nothing. The agent comes from
the build (banger-agent next to this binary) or --agent. An SSH key pair id_ed25519 is
generated when the bundle has none.`,
		Example: `  banger runtime install
  banger runtime install --manifest ./runtime-bundle.toml --agent build/bin/banger-agent
  banger runtime install --sha256-override kernel=<sha256>`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			l, err := a.config()
			if err != nil {
				return err
			}
			ov := map[string]string{}
			for _, o := range overrides {
				name, sum, ok := strings.Cut(o, "=")
				if !ok || name == "" {
					return usageErrorf("--sha256-override %q: use NAME=SHA256, e.g. kernel=<64 hex digits>", o)
				}
				sum = strings.ToLower(sum)
				if !image.ValidSHA256(sum) {
					return usageErrorf("--sha256-override %s=%s: the sum must be 64 hex digits (the output of sha256sum)", name, sum)
				}
				ov[name] = sum
			}
			path, err := findManifest(manifest)
			if err != nil {
				return usageErrorf("%v", err)
			}
			m, warns, err := image.LoadManifest(path)
			if err != nil {
				return usageErrorf("%v", err)
			}
			for name := range ov {
				if m.Get(name) == nil {
					return usageErrorf("--sha256-override %s: the manifest %s has no [%s]; its artifacts are %s", name, m.File, name, strings.Join(manifestArtifacts(m), ", "))
				}
			}
			for _, w := range warns {
				fmt.Fprintf(a.stderr, "banger: warning: %s\n", w)
			}
			agentPath, err := image.ResolveAgent(agent, exeDir(), m)
			if err != nil {
				return failf("%v", err)
			}
			dir := l.Config.RuntimeDir
			b, err := image.Install(c.Context(), image.InstallOptions{
				RuntimeDir: dir, Manifest: m, Agent: agentPath, SHA256Overrides: ov, Progress: a.stderr,
			})
			if err != nil {
				// One line per artifact that could not be fetched or checked.
				for _, line := range strings.Split(err.Error(), "\n") {
					fmt.Fprintf(a.stderr, "banger: %s\n", line)
				}
				fmt.Fprintf(a.stderr, "banger: nothing was installed in %s\n", dir)
				return &silentExit{code: ExitFailed}
			}
			fmt.Fprintf(a.stdout, "installed runtime bundle in %s\n", dir)
			t := newTable(a.stdout)
			t.row("ROLE", "FILE", "SIZE", "SHA256")
			for _, role := range b.Roles() {
				f := b.Files[role]
				t.row(role, f.Path, config.FormatSize(f.Size), f.SHA256)
			}
			t.flush()
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&manifest, "manifest", "", "bundle manifest (default: runtime-bundle.toml here, in banger's checkout, or installed beside banger in ../share/banger)")
	f.StringVar(&agent, "agent", "", "banger-agent binary (default: the one next to banger)")
	f.StringArrayVar(&overrides, "sha256-override", nil, "NAME=SHA256: expected sum of an artifact whose manifest sha256 is empty or outdated (repeatable)")
	return cmd
}

// runtimeShow is `runtime show --json`'s output. Without a readable
// bundle it is {"installed": false, "dir": ..., "files": [], "ok": false,
// "error": ...}.
type runtimeShow struct {
	Installed          bool               `json:"installed"`
	Dir                string             `json:"dir"`
	InstalledAt        *time.Time         `json:"installed_at,omitempty"`
	Error              string             `json:"error,omitempty"`
	Manifest           string             `json:"manifest,omitempty"`
	Files              []image.FileStatus `json:"files"`
	FirecrackerVersion string             `json:"firecracker_version,omitempty"`
	FirecrackerError   string             `json:"firecracker_error,omitempty"`
	Warnings           []string           `json:"warnings,omitempty"`
	OK                 bool               `json:"ok"`
}

func (a *app) runtimeShowCmd() *cobra.Command {
	var jsonOut bool
	cmd := &cobra.Command{
		Use:     "show [--json]",
		Short:   "Show the installed runtime bundle: files, sizes, checksums, Firecracker version",
		Example: "  banger runtime show\n  banger runtime show --json",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			l, err := a.config()
			if err != nil {
				return err
			}
			dir := l.Config.RuntimeDir
			b, warns, err := image.ReadBundle(dir)
			if err != nil {
				if !jsonOut {
					return failf("%v", err)
				}
				if err := writeJSON(a.stdout, runtimeShow{Dir: dir, Error: err.Error(), Files: []image.FileStatus{}}); err != nil {
					return err
				}
				return &silentExit{code: ExitFailed}
			}
			at := b.InstalledAt
			out := runtimeShow{Installed: true, Dir: dir, InstalledAt: &at, Manifest: b.Manifest, Files: image.Inspect(dir, b), Warnings: warns, OK: true}
			if out.Files == nil {
				out.Files = []image.FileStatus{}
			}
			for _, f := range out.Files {
				if f.Status != image.StatusOK {
					out.OK = false
				}
			}
			if f, ok := b.Files[image.RoleFirecracker]; ok {
				v, err := image.FirecrackerVersion(c.Context(), filepath.Join(dir, f.Path))
				if err != nil {
					out.FirecrackerError = err.Error()
				}
				out.FirecrackerVersion = v
			}
			if jsonOut {
				if err := writeJSON(a.stdout, out); err != nil {
					return err
				}
			} else {
				for _, w := range warns {
					fmt.Fprintf(a.stderr, "banger: warning: %s\n", w)
				}
				fmt.Fprintf(a.stdout, "runtime bundle %s (installed %s)\n", dir, b.InstalledAt.Local().Format(time.DateTime))
				t := newTable(a.stdout)
				t.row("ROLE", "FILE", "SIZE", "SHA256", "CHECK")
				for _, f := range out.Files {
					t.row(f.Role, filepath.Base(f.Path), config.FormatSize(f.Size), shortSum(f.SHA256), f.Status)
				}
				t.flush()
				switch {
				case out.FirecrackerVersion != "":
					fmt.Fprintf(a.stdout, "firecracker --version: %s\n", out.FirecrackerVersion)
				case out.FirecrackerError != "":
					fmt.Fprintf(a.stdout, "firecracker --version: failed: %s\n", out.FirecrackerError)
				}
			}
			if !out.OK {
				if !jsonOut {
					fmt.Fprintln(a.stderr, "banger: some bundle files are missing or changed; reinstall with `banger runtime install`")
				}
				return &silentExit{code: ExitFailed}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	return cmd
}

func shortSum(s string) string {
	if len(s) > 16 {
		return s[:16] + "…"
	}
	return s
}

// daemonImages adapts the daemon client to what internal/image needs.
type daemonImages struct{ cl *client.Client }

func (d daemonImages) RegisterImage(ctx context.Context, p api.ImageRegisterParams) (api.Image, error) {
	var out api.Image
	err := d.cl.Call(ctx, api.MethodImageRegister, p, &out)
	return out, err
}

func (d daemonImages) CreateVM(ctx context.Context, p api.VMCreateParams) (api.VMResult, error) {
	var out api.VMResult
	err := d.cl.Call(ctx, api.MethodVMCreate, p, &out)
	return out, err
}

func (d daemonImages) DeleteVM(ctx context.Context, ref string) error {
	return d.cl.Call(ctx, api.MethodVMDelete, api.VMRef{Ref: ref}, nil)
}

// imageExists reports whether the daemon knows an image called name.
func imageExists(ctx context.Context, cl *client.Client, name string) (bool, error) {
	var l api.ImageList
	if err := cl.Call(ctx, api.MethodImageList, nil, &l); err != nil {
		return false, err
	}
	for _, im := range l.Images {
		if im.Name == name {
			return true, nil
		}
	}
	return false, nil
}

func (a *app) imageBuildVoidCmd() *cobra.Command {
	var name, size, tarball, sum, manifest, imagesDir, agent string
	var verbose bool
	cmd := &cobra.Command{
		Use:   "void [--name void] [--size 4G] [--rootfs-tarball PATH|URL --sha256 SUM]",
		Short: "Build the Void Linux image (an option; Debian stays the default) and register it",
		Long: `Runs images/void/make-rootfs-void.sh as root (directly when banger runs as root, else with
sudo -n, which needs a sudo rule allowing it): unpacks a Void x86_64-glibc ROOTFS tarball,
installs images/packages.void with the static xbps-install (XBPS_INSTALL, else
xbps-install.static on PATH), adds the agent as a runit service, hardens sshd, and writes an
ext4 image, which is then registered under --name. Select it with ` + "`banger vm create --image void`" + `.
Without --rootfs-tarball, the manifest's [void_rootfs] is used.`,
		Example: `  banger image build void --rootfs-tarball ./void-x86_64-ROOTFS-20250202.tar.xz
  banger image build void --rootfs-tarball https://repo-default.voidlinux.org/live/current/void-x86_64-ROOTFS-20250202.tar.xz --sha256 <sum>`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			l, err := a.config()
			if err != nil {
				return err
			}
			bytes, err := config.ParseSize(size)
			if err != nil {
				return usageErrorf("--size %q: %v (use e.g. 4G)", size, err)
			}
			if tarball == "" {
				path, err := findManifest(manifest)
				if err != nil {
					return usageErrorf("no --rootfs-tarball given and %v", err)
				}
				m, _, err := image.LoadManifest(path)
				if err != nil {
					return usageErrorf("no --rootfs-tarball given and %v", err)
				}
				if m.VoidRootfs == nil {
					return usageErrorf("no --rootfs-tarball given and manifest %s has no [void_rootfs]; pass --rootfs-tarball PATH|URL --sha256 SUM (Void's ROOTFS tarballs are under https://repo-default.voidlinux.org/live/current/)", m.File)
				}
				tarball, sum = m.VoidRootfs.Source(), m.VoidRootfs.SHA256
				if m.VoidRootfs.Path != "" && !filepath.IsAbs(tarball) {
					tarball = filepath.Join(m.Dir, tarball)
				}
			}
			cwd, _ := os.Getwd()
			dir, err := image.FindImagesDir(imagesDir, exeDir(), cwd)
			if err != nil {
				return usageErrorf("%v", err)
			}
			agentPath := l.Config.VsockAgentPath
			if agent != "" {
				agentPath = agent
			}
			if !fileExists(agentPath) {
				return failf("agent binary %s not found; install the runtime bundle (`banger runtime install`) or pass --agent", agentPath)
			}
			pub := l.Config.SSHKeyPath + ".pub"
			if !fileExists(pub) {
				return failf("public key %s not found; `banger runtime install` generates it", pub)
			}
			cl, err := a.client(c.Context())
			if err != nil {
				return err
			}
			if taken, err := imageExists(c.Context(), cl, name); err != nil {
				return err
			} else if taken {
				return usageErrorf("image %s already exists; delete it first (`banger image delete %s`) or choose --name", name, name)
			}
			opts := image.VoidOptions{
				Name: name, SizeBytes: bytes, Tarball: tarball, SHA256: sum, ImagesDir: dir,
				Agent: agentPath, PubKey: pub, WorkDir: filepath.Join(l.Paths.StateDir, "build"),
				Getenv: a.getenv, Register: daemonImages{cl}, Out: a.stdout, Euid: os.Geteuid(),
			}
			if verbose {
				opts.Log = a.stderr
			}
			fmt.Fprintf(a.stdout, "building Void image %s (%s) from %s\n", name, config.FormatSize(bytes), tarball)
			img, err := image.BuildVoid(c.Context(), opts)
			if err != nil {
				var ae *api.Error
				if errors.As(err, &ae) {
					return err
				}
				return failf("%v", err)
			}
			fmt.Fprintf(a.stdout, "registered image %s (%s, %s); try it: banger vm create --image %s\n", img.Name, img.ID, config.FormatSize(img.SizeBytes), img.Name)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&name, "name", "void", "name to register the image under")
	f.StringVar(&size, "size", "4G", "size of the image file")
	f.StringVar(&tarball, "rootfs-tarball", "", "Void x86_64-glibc ROOTFS tarball: a path or an https URL")
	f.StringVar(&sum, "sha256", "", "sha256 of the tarball (required for a URL)")
	f.StringVar(&manifest, "manifest", "", "manifest whose [void_rootfs] is used without --rootfs-tarball")
	f.StringVar(&imagesDir, "images-dir", "", "the checkout's images/ directory (default: found next to banger or here)")
	f.StringVar(&agent, "agent", "", "banger-agent binary to install (default: vsock_agent_path)")
	f.BoolVarP(&verbose, "verbose", "v", false, "show the build script's output")
	return cmd
}

func (a *app) imageVerifyCmd() *cobra.Command {
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   "verify NAME",
		Short: "Boot a throwaway VM from an image and check it over SSH, then delete the VM",
		Long: `Creates VM verify-<random> from the image, waits for its agent, then checks over SSH that
root's shell is bash, /root is the work disk /dev/vdb and the banger-agent unit (systemd) or
service (runit) is enabled. Prints a pass/fail table and exits 1 if any check fails. The VM
is always deleted.`,
		Example: "  banger image verify debian\n  banger image verify void --json",
		Args:    cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			l, err := a.config()
			if err != nil {
				return err
			}
			key := l.Config.SSHKeyPath
			if !fileExists(key) {
				return failf("ssh key %s not found; install the runtime bundle (`banger runtime install`) or set ssh_key_path", key)
			}
			cl, err := a.client(c.Context())
			if err != nil {
				return err
			}
			name := image.VerifyVMName()
			fmt.Fprintf(a.stderr, "booting throwaway VM %s from image %s\n", name, args[0])
			stop := a.progress(c.Context(), cl, jsonOut, name)
			rep, err := image.Verify(c.Context(), image.VerifyOptions{
				Image: args[0], Name: name, VMs: daemonImages{cl},
				SSH:         image.SystemSSH{Key: key, KnownHosts: filepath.Join(l.Paths.StateDir, "known_hosts")},
				SSHDeadline: max(l.Config.BootDeadline, 30*time.Second),
			})
			stop()
			if err != nil {
				return err
			}
			if jsonOut {
				if err := writeJSON(a.stdout, struct {
					*image.VerifyReport
					Passed bool `json:"passed"`
				}{rep, rep.Passed()}); err != nil {
					return err
				}
			} else {
				t := newTable(a.stdout)
				t.row("CHECK", "RESULT", "DETAIL")
				for _, ch := range rep.Checks {
					res := "FAIL"
					if ch.Pass {
						res = "pass"
					}
					t.row(ch.Name, res, ch.Detail)
				}
				t.flush()
			}
			if !rep.Passed() {
				if !jsonOut {
					fmt.Fprintf(a.stderr, "banger: image %s failed verification\n", args[0])
				}
				return &silentExit{code: ExitFailed}
			}
			if !jsonOut {
				fmt.Fprintf(a.stdout, "image %s passed; deleted VM %s\n", args[0], rep.VM)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	return cmd
}

// sha256Overrides parses --sha256-override NAME=SUM values: NAME must be an
// artifact of the bundle and SUM 64 hex digits, else a usage error (exit 2)
// before anything is fetched.
func sha256Overrides(list []string) (map[string]string, error) {
	ov := map[string]string{}
	for _, o := range list {
		name, sum, ok := strings.Cut(o, "=")
		if !ok || name == "" {
			return nil, usageErrorf("--sha256-override %q: use NAME=SHA256, e.g. kernel=<64 hex digits>", o)
		}
		if !slices.Contains(image.ArtifactNames(), name) {
			return nil, usageErrorf("--sha256-override %q: %q is not an artifact of the bundle; use one of %s", o, name, strings.Join(image.ArtifactNames(), ", "))
		}
		sum = strings.ToLower(sum)
		if b, err := hex.DecodeString(sum); err != nil || len(b) != 32 {
			return nil, usageErrorf("--sha256-override %q: %q is not a sha256 (64 hex digits)", o, sum)
		}
		ov[name] = sum
	}
	return ov, nil
}
