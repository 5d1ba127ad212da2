package image

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/api"
)

func requireRootTools(t *testing.T, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the build script keeps root ownership in the image tree")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (CI installs it)", tool)
		}
	}
}

// fakeRegistrar copies the built image like the daemon's image.register.
type fakeRegistrar struct {
	dir    string
	params []api.ImageRegisterParams
	copied string
}

func (f *fakeRegistrar) RegisterImage(_ context.Context, p api.ImageRegisterParams) (api.Image, error) {
	f.params = append(f.params, p)
	f.copied = filepath.Join(f.dir, p.Name+".ext4")
	if err := copyFile(p.RootfsPath, f.copied, 0o644); err != nil {
		return api.Image{}, err
	}
	return api.Image{ID: "img1", Name: p.Name, RootfsPath: f.copied}, nil
}

// voidFixture makes a tiny stand-in for the Void ROOTFS tarball: a few
// directories, a passwd whose root uses /bin/sh, a permissive sshd_config
// and a baked host key the build must remove.
func voidFixture(t *testing.T) string {
	t.Helper()
	tree := t.TempDir()
	files := map[string]string{
		"etc/passwd":                     "root:x:0:0:root:/root:/bin/sh\nnobody:x:99:99:Unprivileged User:/dev/null:/bin/false\n",
		"etc/shells":                     "/bin/sh\n",
		"etc/ssh/sshd_config":            "#PermitRootLogin prohibit-password\nPermitRootLogin yes\nPasswordAuthentication yes\nSubsystem sftp /usr/libexec/sftp-server\n",
		"etc/ssh/ssh_host_ed25519_key":   "baked host key\n",
		"etc/ssh/ssh_host_rsa_key.pub":   "baked host key\n",
		"etc/skel/.bash_profile":         "[ -f $HOME/.bashrc ] && . $HOME/.bashrc\n",
		"etc/fstab":                      "tmpfs /tmp tmpfs defaults,nosuid,nodev 0 0\n",
		"var/db/xbps/keys/placeholder":   "key\n",
		"etc/runit/runsvdir/default/.ok": "",
	}
	for name, content := range files {
		p := filepath.Join(tree, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"root", "usr/bin", "etc/sv/sshd", "var/service"} {
		os.MkdirAll(filepath.Join(tree, d), 0o755)
	}
	tarball := filepath.Join(t.TempDir(), "void-x86_64-ROOTFS-fixture.tar.gz")
	if out, err := exec.Command("tar", "-czf", tarball, "-C", tree, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v: %s", err, out)
	}
	return tarball
}

// standInXBPS writes an xbps-install that records its arguments, one per
// line.
func standInXBPS(t *testing.T) (bin, record string) {
	t.Helper()
	dir := t.TempDir()
	bin, record = filepath.Join(dir, "xbps-install.static"), filepath.Join(dir, "xbps.args")
	script := "#!/bin/sh\nprintf '%s\\n' \"$@\" >" + record + "\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin, record
}

func debugfsCat(t *testing.T, img, path string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", "cat "+path, img).Output()
	if err != nil {
		t.Fatalf("debugfs cat %s: %v", path, err)
	}
	return string(out)
}

func debugfs(t *testing.T, img, req string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", req, img).CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs %s: %v: %s", req, err, out)
	}
	return string(out)
}

// packageList parses a package list the way the script does.
func packageList(t *testing.T, path string) []string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(raw), "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		if line = strings.TrimSpace(line); line != "" {
			out = append(out, line)
		}
	}
	return out
}

func TestBuildVoid(t *testing.T) {
	requireRootTools(t, "bash", "tar", "mkfs.ext4", "debugfs")
	imagesDir, err := filepath.Abs("../../images")
	if err != nil {
		t.Fatal(err)
	}
	xbps, record := standInXBPS(t)
	pub := filepath.Join(t.TempDir(), "id_ed25519.pub")
	_, pubLine, err := GenerateKey("banger-test")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(pub, pubLine, 0o644)
	agent := fakeAgent(t)
	reg := &fakeRegistrar{dir: t.TempDir()}
	work := t.TempDir()
	var progress, log bytes.Buffer
	img, err := BuildVoid(context.Background(), VoidOptions{
		Name: "void", SizeBytes: 64 << 20, Tarball: voidFixture(t), ImagesDir: imagesDir,
		Agent: agent, PubKey: pub, WorkDir: work, XBPSInstall: xbps, Register: reg, Out: &progress, Log: &log,
	})
	if err != nil {
		t.Fatalf("BuildVoid: %v\nlog:\n%s", err, log.String())
	}
	if img.Name != "void" || len(reg.params) != 1 || reg.params[0].Name != "void" {
		t.Fatalf("registered %+v / %+v", img, reg.params)
	}
	for _, stage := range []string{"unpacking", "packages from", "runit service", "hardening sshd", "writing void.ext4", "registering image void"} {
		if !strings.Contains(progress.String(), stage) {
			t.Fatalf("progress lacks %q:\n%s", stage, progress.String())
		}
	}
	if ents, _ := os.ReadDir(work); len(ents) != 0 {
		t.Fatalf("build dir not cleaned up: %v", ents)
	}

	// xbps-install was asked for exactly the package list, into the tree.
	rec, err := os.ReadFile(record)
	if err != nil {
		t.Fatalf("xbps-install never ran: %v", err)
	}
	args := strings.Split(strings.TrimSpace(string(rec)), "\n")
	want := packageList(t, filepath.Join(imagesDir, VoidPackages))
	if len(args) < len(want) || strings.Join(args[len(args)-len(want):], " ") != strings.Join(want, " ") {
		t.Fatalf("xbps-install args %q, want them to end with %q", args, want)
	}
	if !strings.Contains(string(rec), "-r\n") || !strings.Contains(string(rec), "-R\nhttps://repo-default.voidlinux.org/current") {
		t.Fatalf("xbps-install not pointed at the tree and repo: %q", args)
	}

	im := reg.copied
	sshd := debugfsCat(t, im, "/etc/ssh/sshd_config")
	for _, w := range []string{"PermitRootLogin prohibit-password", "PasswordAuthentication no", "KbdInteractiveAuthentication no", "Subsystem sftp"} {
		if !strings.Contains(sshd, w) {
			t.Fatalf("sshd_config lacks %q:\n%s", w, sshd)
		}
	}
	for _, bad := range []string{"PermitRootLogin yes", "PasswordAuthentication yes"} {
		if strings.Contains(sshd, bad) {
			t.Fatalf("sshd_config still has %q:\n%s", bad, sshd)
		}
	}
	if got := debugfsCat(t, im, "/root/.ssh/authorized_keys"); got != string(pubLine) {
		t.Fatalf("authorized_keys = %q, want %q", got, pubLine)
	}
	if st := debugfs(t, im, "stat /root/.ssh/authorized_keys"); !strings.Contains(st, "Mode:  0600") || !strings.Contains(st, "User:     0") {
		t.Fatalf("authorized_keys mode/owner:\n%s", st)
	}
	if ls := debugfs(t, im, "ls -l /etc/ssh"); strings.Contains(ls, "ssh_host_") {
		t.Fatalf("baked host keys left:\n%s", ls)
	}
	link := debugfs(t, im, "stat /etc/runit/runsvdir/default/banger-agent")
	if !strings.Contains(link, "Type: symlink") || !strings.Contains(link, `"/etc/sv/banger-agent"`) {
		t.Fatalf("runit link:\n%s", link)
	}
	if run := debugfsCat(t, im, "/etc/sv/banger-agent/run"); !strings.Contains(run, "exec /usr/local/bin/banger-agent") {
		t.Fatalf("run script: %q", run)
	}
	if got, _ := os.ReadFile(agent); debugfsCat(t, im, "/usr/local/bin/banger-agent") != string(got) {
		t.Fatal("agent binary not installed")
	}
	fstab := debugfsCat(t, im, "/etc/fstab")
	if !strings.Contains(fstab, "/dev/vdb /root ext4 defaults,nofail 0 2\n") || !strings.Contains(fstab, "tmpfs /tmp") {
		t.Fatalf("fstab:\n%s", fstab)
	}
	if passwd := debugfsCat(t, im, "/etc/passwd"); !strings.HasPrefix(passwd, "root:x:0:0:root:/root:/bin/bash\n") || !strings.Contains(passwd, "nobody:x:99:99:Unprivileged User:/dev/null:/bin/false") {
		t.Fatalf("passwd:\n%s", passwd)
	}
	for _, f := range []string{"/root/.bashrc", "/root/.profile", "/root/.bash_profile"} {
		if debugfsCat(t, im, f) == "" {
			t.Fatalf("%s missing or empty", f)
		}
	}
	if rl := debugfs(t, im, "stat /etc/resolv.conf"); !strings.Contains(rl, `"/proc/net/pnp"`) {
		t.Fatalf("resolv.conf link:\n%s", rl)
	}
}

func TestBuildVoidRefusals(t *testing.T) {
	requireRootTools(t, "bash", "tar", "mkfs.ext4")
	imagesDir, _ := filepath.Abs("../../images")
	pub := filepath.Join(t.TempDir(), "k.pub")
	os.WriteFile(pub, []byte("ssh-ed25519 AAAA x\n"), 0o644)
	xbps, _ := standInXBPS(t)
	base := func() VoidOptions {
		return VoidOptions{Name: "void", SizeBytes: 64 << 20, Tarball: voidFixture(t), ImagesDir: imagesDir,
			Agent: fakeAgent(t), PubKey: pub, WorkDir: t.TempDir(), XBPSInstall: xbps, Register: &fakeRegistrar{dir: t.TempDir()},
			Getenv: func(string) string { return "" }}
	}
	t.Run("missing xbps", func(t *testing.T) {
		o := base()
		o.XBPSInstall = ""
		t.Setenv("PATH", t.TempDir())
		_, err := BuildVoid(context.Background(), o)
		if err == nil || !strings.Contains(err.Error(), "xbps-static-latest") || !strings.Contains(err.Error(), "XBPS_INSTALL") {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("tarball checksum", func(t *testing.T) {
		o := base()
		o.SHA256 = strings.Repeat("0", 64)
		_, err := BuildVoid(context.Background(), o)
		var ce *ChecksumError
		if !errors.As(err, &ce) {
			t.Fatalf("err %v, want a checksum error", err)
		}
	})
	t.Run("url without sha256", func(t *testing.T) {
		o := base()
		o.Tarball = "https://repo-default.voidlinux.org/live/current/void-x86_64-ROOTFS.tar.xz"
		_, err := BuildVoid(context.Background(), o)
		if err == nil || !strings.Contains(err.Error(), "--sha256 is required") {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("not a rootfs", func(t *testing.T) {
		o := base()
		empty := filepath.Join(t.TempDir(), "empty.tar")
		exec.Command("tar", "-cf", empty, "-T", "/dev/null").Run()
		o.Tarball = empty
		reg := o.Register.(*fakeRegistrar)
		_, err := BuildVoid(context.Background(), o)
		if err == nil || !strings.Contains(err.Error(), "does not look like a Void ROOTFS") {
			t.Fatalf("err %v", err)
		}
		if len(reg.params) != 0 {
			t.Fatal("a failed build was registered")
		}
	})
}

// An installed banger finds the scripts `make install` puts in
// $PREFIX/share/banger/images, as a checkout's build/bin finds images/.
func TestFindImagesDirInstalled(t *testing.T) {
	prefix := t.TempDir()
	scripts := filepath.Join(prefix, "share", "banger", "images")
	if err := os.MkdirAll(filepath.Dir(filepath.Join(scripts, VoidScript)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(scripts, VoidScript), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	got, err := FindImagesDir("", filepath.Join(prefix, "bin"), t.TempDir())
	if err != nil || got != scripts {
		t.Fatalf("FindImagesDir from %s/bin = %q, %v; want %s", prefix, got, err, scripts)
	}
}
