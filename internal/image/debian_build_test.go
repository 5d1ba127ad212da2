package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/hostops"
)

// builtDebianImage builds the Debian image once with the real builder
// (debootstrap, customize.sh, mkfs) and caches it under the temp directory,
// keyed by the hash of the package list and the scripts, so later runs
// reuse it. It skips when the build cannot run here.
func builtDebianImage(t *testing.T) (img, pubKey string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: debootstrap and chroot run privileged")
	}
	if !HaveDebootstrap() {
		t.Skip("debootstrap not installed (apt-get install debootstrap)")
	}
	for _, tool := range []string{"mkfs.ext4", "debugfs", "unshare", "chroot"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	mirror, err := hostops.DebianMirror([]string{hostops.DebianSourcesFile, hostops.DebianSourcesList}, hostops.DebianSuite)
	if err != nil {
		t.Skipf("no Debian mirror configured: %v", err)
	}
	u, err := url.Parse(mirror)
	if err != nil {
		t.Skipf("mirror %q: %v", mirror, err)
	}
	if u.Scheme == "http" || u.Scheme == "https" {
		port := u.Port()
		if port == "" {
			port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
		}
		c, err := net.DialTimeout("tcp", net.JoinHostPort(u.Hostname(), port), 5*time.Second)
		if err != nil {
			t.Skipf("no network to the Debian mirror %s: %v", mirror, err)
		}
		c.Close()
	}
	repo, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	scripts := filepath.Join(repo, "images")
	h := sha256.New()
	for _, f := range []string{PackagesFile, DebianCustomize, DebianEnterChroot} {
		b, err := os.ReadFile(filepath.Join(scripts, f))
		if err != nil {
			t.Fatal(err)
		}
		h.Write(b)
	}
	key := hex.EncodeToString(h.Sum(nil))[:16]
	root := filepath.Join(os.TempDir(), "banger-image-test", key)
	img = filepath.Join(root, "rootfs.ext4")
	done := filepath.Join(root, "complete")
	keyPath := filepath.Join(root, "id_ed25519")
	// Concurrent test runs share the cache: one builds, the others wait.
	if err := os.MkdirAll(filepath.Dir(root), 0o700); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(root+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		t.Fatalf("locking the image cache: %v", err)
	}
	defer unix.Flock(int(lock.Fd()), unix.LOCK_UN)
	if _, err := os.Stat(done); err == nil {
		pub, err := os.ReadFile(keyPath + ".pub")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("reusing the image built earlier: %s", img)
		return img, strings.TrimSpace(string(pub))
	}
	if dl, ok := t.Deadline(); ok && time.Until(dl) < 15*time.Minute {
		t.Skipf("building the Debian image takes minutes and only %s of test time is left; run with -timeout 30m", time.Until(dl).Round(time.Second))
	}
	if err := os.RemoveAll(root); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(root, 0o700); err != nil {
		t.Fatal(err)
	}
	agent := filepath.Join(t.TempDir(), "banger-agent")
	build := exec.Command("go", "build", "-o", agent, "./cmd/banger-agent")
	build.Dir = repo
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the agent: %v\n%s", err, out)
	}
	host := hostops.New(hostops.Options{Roots: []string{root}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	res, err := BuildDebian(ctx, host, DebianOptions{
		Out: img, WorkDir: filepath.Join(root, "build"), SizeBytes: 4 << 30,
		AgentPath: agent, SSHKeyPath: keyPath, ScriptsDir: scripts,
		Progress: func(stage, msg string, el time.Duration) { t.Logf("%-12s %6.1fs %s", stage, el.Seconds(), msg) },
	})
	if err != nil {
		t.Fatalf("building the Debian image: %v", err)
	}
	want, err := PackagesHash(filepath.Join(scripts, PackagesFile))
	if err != nil {
		t.Fatal(err)
	}
	if res.PackagesHash != want {
		t.Errorf("packages hash %s, want the hash of images/packages.apt %s", res.PackagesHash, want)
	}
	t.Logf("built %s in %s (%v)", img, res.Elapsed.Round(time.Second), res.Stages)
	if err := os.WriteFile(done, []byte(res.PackagesHash+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pub, err := os.ReadFile(keyPath + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	return img, strings.TrimSpace(string(pub))
}

func debugfsRead(t *testing.T, img, req string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", req, img).CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs -R %q: %v\n%s", req, err, out)
	}
	// drop debugfs's banner line
	s := string(out)
	if i := strings.IndexByte(s, '\n'); i >= 0 && strings.HasPrefix(s, "debugfs ") {
		s = s[i+1:]
	}
	return s
}

// TestDebianImageContents inspects the built image without booting it.
func TestDebianImageContents(t *testing.T) {
	img, pub := builtDebianImage(t)
	symlinkTo := func(path string) string {
		st := debugfsRead(t, img, "stat "+path)
		if !strings.Contains(st, "Type: symlink") {
			return ""
		}
		m := regexp.MustCompile(`Fast link dest: "([^"]*)"`).FindStringSubmatch(st)
		if m == nil {
			return "?"
		}
		return m[1]
	}
	mode := func(path string) string {
		m := regexp.MustCompile(`Mode:\s+(\d+)`).FindStringSubmatch(debugfsRead(t, img, "stat "+path))
		if m == nil {
			return ""
		}
		return m[1]
	}
	checks := []struct {
		name string
		ok   func() (bool, string)
	}{
		{"root's shell is bash", func() (bool, string) {
			passwd := debugfsRead(t, img, "cat /etc/passwd")
			return regexp.MustCompile(`(?m)^root:[^:]*:0:0:[^:]*:/root:/bin/bash$`).MatchString(passwd), passwd
		}},
		{"root has .bashrc and .profile", func() (bool, string) {
			ls := debugfsRead(t, img, "ls -l /root")
			return strings.Contains(ls, ".bashrc") && strings.Contains(ls, ".profile"), ls
		}},
		{"sshd drop-in is key-only", func() (bool, string) {
			conf := debugfsRead(t, img, "cat /etc/ssh/sshd_config.d/banger.conf")
			for _, l := range []string{"PasswordAuthentication no", "KbdInteractiveAuthentication no", "PermitRootLogin prohibit-password", "PubkeyAuthentication yes"} {
				if !regexp.MustCompile(`(?m)^` + l + `$`).MatchString(conf) {
					return false, conf
				}
			}
			return true, ""
		}},
		{"bundle key authorized for root (0600 in 0700)", func() (bool, string) {
			keys := debugfsRead(t, img, "cat /root/.ssh/authorized_keys")
			got := mode("/root/.ssh/authorized_keys") + " " + mode("/root/.ssh")
			return strings.TrimSpace(keys) == pub && got == "0600 0700", keys + " modes " + got
		}},
		{"agent installed and its unit enabled", func() (bool, string) {
			dest := symlinkTo("/etc/systemd/system/multi-user.target.wants/banger-agent.service")
			unit := debugfsRead(t, img, "cat /etc/systemd/system/banger-agent.service")
			return dest == "/etc/systemd/system/banger-agent.service" && strings.Contains(unit, "ExecStart=/usr/local/bin/banger-agent") &&
				mode("/usr/local/bin/banger-agent") == "0755", "wants -> " + dest
		}},
		{"fstab mounts the work disk on /root", func() (bool, string) {
			fstab := debugfsRead(t, img, "cat /etc/fstab")
			return regexp.MustCompile(`(?m)^/dev/vdb\s+/root\s+ext4\s+defaults,nofail\s+0\s+2$`).MatchString(fstab), fstab
		}},
		{"no baked ssh host keys", func() (bool, string) {
			ls := debugfsRead(t, img, "ls /etc/ssh")
			return !strings.Contains(ls, "ssh_host_"), ls
		}},
		{"host keys generated before ssh.service", func() (bool, string) {
			dest := symlinkTo("/etc/systemd/system/ssh.service.wants/banger-ssh-hostkeys.service")
			return dest == "/etc/systemd/system/banger-ssh-hostkeys.service", dest
		}},
		{"resolv.conf is the kernel's", func() (bool, string) {
			d := symlinkTo("/etc/resolv.conf")
			return d == "/proc/net/pnp", d
		}},
		{"poweroff reboots", func() (bool, string) {
			d := symlinkTo("/etc/systemd/system/poweroff.target")
			return d == "/lib/systemd/system/reboot.target", d
		}},
		{"serial getty on ttyS0", func() (bool, string) {
			d := symlinkTo("/etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service")
			return d == "/lib/systemd/system/serial-getty@.service", d
		}},
	}
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			if ok, detail := c.ok(); !ok {
				t.Errorf("%s: not so in %s:\n%s", c.name, img, detail)
			}
		})
	}
}
