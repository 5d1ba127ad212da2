package hostops

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

func TestMirrorIn(t *testing.T) {
	const deb822 = `Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
`
	for _, tc := range []struct {
		name, text, suite, want string
	}{
		{"deb822", deb822, "bookworm", "http://deb.debian.org/debian"},
		{"deb822 security suite only", deb822, "bookworm-security", "http://deb.debian.org/debian-security"},
		{"deb822 other suite", deb822, "trixie", ""},
		{"deb822 local mirror, trailing slash", "Types: deb deb-src\nURIs: http://mirror.lan:3142/debian/\nSuites: bookworm\n", "bookworm", "http://mirror.lan:3142/debian"},
		{"deb822 disabled stanza", "Enabled: no\nTypes: deb\nURIs: http://a/debian\nSuites: bookworm\n\nTypes: deb\nURIs: http://b/debian\nSuites: bookworm\n", "bookworm", "http://b/debian"},
		{"deb822 source-only stanza", "Types: deb-src\nURIs: http://a/debian\nSuites: bookworm\n", "bookworm", ""},
		{"one-line", "# comment\ndeb http://ftp.example/debian bookworm main\n", "bookworm", "http://ftp.example/debian"},
		{"one-line with options", "deb [arch=amd64 signed-by=/k.gpg] https://ftp.example/debian bookworm main\n", "bookworm", "https://ftp.example/debian"},
		{"one-line other suite", "deb http://ftp.example/debian bullseye main\n", "bookworm", ""},
		{"cdrom is not a mirror", "deb cdrom:[Debian]/ bookworm main\n", "bookworm", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := mirrorIn(tc.text, tc.suite); got != tc.want {
				t.Errorf("mirrorIn = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestDebianMirrorFiles(t *testing.T) {
	dir := t.TempDir()
	list := filepath.Join(dir, "sources.list")
	if err := os.WriteFile(list, []byte("deb http://fallback/debian bookworm main\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := DebianMirror([]string{filepath.Join(dir, "missing.sources"), list}, "bookworm")
	if err != nil || got != "http://fallback/debian" {
		t.Fatalf("DebianMirror = %q, %v", got, err)
	}
	_, err = DebianMirror([]string{filepath.Join(dir, "missing.sources")}, "bookworm")
	if err == nil || !strings.Contains(err.Error(), "Suites: bookworm") {
		t.Fatalf("err = %v, want a hint naming the stanza", err)
	}
}

func TestCheckAuthorizedKey(t *testing.T) {
	pub, _, err := generateTestKey()
	if err != nil {
		t.Fatal(err)
	}
	got, err := checkAuthorizedKey(pub + " me@host")
	if err != nil || got != pub+" me@host\n" {
		t.Fatalf("checkAuthorizedKey = %q, %v", got, err)
	}
	for _, bad := range []string{"", "not a key", pub + "\n" + pub, "command=\"rm -rf /\" " + pub + "\nx"} {
		if _, err := checkAuthorizedKey(bad); !errors.Is(err, ErrRefused) {
			t.Errorf("checkAuthorizedKey(%q) = %v, want refused", bad, err)
		}
	}
}

func generateTestKey() (string, string, error) {
	dir, err := os.MkdirTemp("", "bk")
	if err != nil {
		return "", "", err
	}
	defer os.RemoveAll(dir)
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, "k")).CombinedOutput(); err != nil {
		return "", "", errors.New(string(out))
	}
	b, err := os.ReadFile(filepath.Join(dir, "k.pub"))
	if err != nil {
		return "", "", err
	}
	k, _, _, _, err := ssh.ParseAuthorizedKey(b)
	if err != nil {
		return "", "", err
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k))), "", nil
}

func TestImageOpsRefuseBadArguments(t *testing.T) {
	root := t.TempDir()
	c := Caller{UID: os.Getuid(), GID: os.Getgid(), Roots: []string{root}}
	for _, tc := range []struct {
		op, args, want string
	}{
		{"image-debootstrap", `{"suite":"bookworm","mirror":"http://evil/"}`, "bad arguments"},
		{"image-debootstrap", `{"suite":"sid"}`, "only bookworm"},
		{"image-customize", `{"staging":"/etc","agent_path":"/bin/sh","authorized_key":"x"}`, "not a banger build staging directory"},
		{"image-customize", `{"staging":"/var/tmp/banger-build-0123456789abcdef","agent_path":"/bin/sh","authorized_key":"x"}`, "staging directory"},
		{"image-mkfs", `{"staging":"/var/tmp/banger-build-../../etc","out":"/x","size_bytes":1073741824,"label":"rootfs"}`, "not a banger build staging directory"},
		{"image-remove-staging", `{"staging":"/"}`, "not a banger build staging directory"},
		{"image-remove-staging", `{"staging":"/var/tmp/banger-build-0123456789abcdef","extra":1}`, "bad arguments"},
	} {
		t.Run(tc.op+" "+tc.want, func(t *testing.T) {
			_, err := dispatch(context.Background(), c, tc.op, []byte(tc.args))
			if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want refused with %q", err, tc.want)
			}
		})
	}
}

func TestTrustedScriptsNonRootNeedsInstalledCopy(t *testing.T) {
	// The test binary has no root-owned images/ beside it, so a non-root
	// caller's requested directory must not be used.
	dir := t.TempDir()
	_, err := trustedScripts(Caller{UID: 1000, GID: 1000}, dir)
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "install-helper") {
		t.Fatalf("err = %v, want a refusal pointing at make install-helper", err)
	}
}

func TestRootOnly(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: checks root ownership of a directory it creates")
	}
	dir, err := os.MkdirTemp("/var/tmp", "banger-rootonly-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	f := filepath.Join(dir, "script.sh")
	if err := os.WriteFile(f, []byte("true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := rootOnly(f); err != nil {
		t.Fatalf("root-owned file refused: %v", err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := rootOnly(f); err == nil || !strings.Contains(err.Error(), "writable") {
		t.Fatalf("world-writable parent accepted: %v", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(f, 1000, 1000); err != nil {
		t.Fatal(err)
	}
	if err := rootOnly(f); err == nil || !strings.Contains(err.Error(), "not owned by root") {
		t.Fatalf("user-owned file accepted: %v", err)
	}
}

// TestImageMkfsAndStaging runs the mkfs and staging ops for real: a staging
// tree made by the op, mkfs.ext4 -d into the caller's file by descriptor,
// ownership checks, removal.
func TestImageMkfsAndStaging(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: staging directories are root-owned")
	}
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("mkfs.ext4 not installed")
	}
	root := t.TempDir()
	c := Caller{UID: 0, GID: 0, Roots: []string{root}}
	staging, err := makeStaging(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(staging) })
	if _, err := checkStaging(Caller{UID: 1000}, staging); !errors.Is(err, ErrRefused) {
		t.Errorf("another user's staging accepted: %v", err)
	}
	tree := filepath.Join(staging, "root")
	if err := os.MkdirAll(filepath.Join(tree, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "etc", "hostname"), []byte("banger\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(root, "rootfs.ext4")
	mkfs := func(out string, size int64, label string) error {
		raw, _ := json.Marshal(MkfsArgs{Staging: staging, Out: out, SizeBytes: size, Label: label})
		_, err := dispatch(context.Background(), c, "image-mkfs", raw)
		return err
	}
	if err := mkfs(out, 512<<20, "rootfs"); !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), out) {
		t.Fatalf("mkfs into a file that does not exist: %v", err)
	}
	if err := os.WriteFile(out, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	victim, err := os.CreateTemp("/var/tmp", "banger-victim-")
	if err != nil {
		t.Fatal(err)
	}
	victim.Close()
	t.Cleanup(func() { os.Remove(victim.Name()) })
	link := filepath.Join(root, "link.ext4")
	if err := os.Symlink(victim.Name(), link); err != nil {
		t.Fatal(err)
	}
	if err := mkfs(link, 512<<20, "rootfs"); !errors.Is(err, ErrRefused) {
		t.Fatalf("mkfs through a symlink out of the roots: %v", err)
	}
	if fi, err := os.Stat(victim.Name()); err != nil || fi.Size() != 0 {
		t.Fatalf("symlink target written: %v %v", fi, err)
	}
	if err := mkfs(out, 100<<20, "rootfs"); !errors.Is(err, ErrRefused) {
		t.Fatalf("tiny size accepted: %v", err)
	}
	if err := mkfs(out, 512<<20, "bad label!"); !errors.Is(err, ErrRefused) {
		t.Fatalf("bad label accepted: %v", err)
	}
	if err := mkfs(filepath.Join("/var/tmp", "x.ext4"), 512<<20, "rootfs"); !errors.Is(err, ErrRefused) {
		t.Fatalf("output outside the roots accepted: %v", err)
	}
	if err := mkfs(out, 512<<20, "rootfs"); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(out)
	if err != nil || fi.Size() != 512<<20 {
		t.Fatalf("image %v, %v", fi, err)
	}
	got, err := exec.Command("debugfs", "-R", "cat /etc/hostname", out).Output()
	if err != nil || !strings.Contains(string(got), "banger") {
		t.Fatalf("image content: %q, %v", got, err)
	}
	label, _ := exec.Command("e2label", out).Output()
	if strings.TrimSpace(string(label)) != "rootfs" {
		t.Errorf("label %q", label)
	}
	raw, _ := json.Marshal(StagingArgs{Staging: staging})
	if _, err := dispatch(context.Background(), c, "image-remove-staging", raw); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(staging); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("staging still there: %v", err)
	}
}

// TestRunLoggedReportsTheBuildsTail pins the shape of the debootstrap and
// customize errors: the exit status as os/exec words it, then the last 20
// lines of stdout and stderr together.
func TestRunLoggedReportsTheBuildsTail(t *testing.T) {
	ctx := context.Background()
	script := `i=1; while [ $i -le 30 ]; do echo "step $i"; i=$((i+1)); done; echo "$BUILD_ENV" >&2; exit 100`
	out, err := runLogged(ctx, []string{"BUILD_ENV=E: Unable to locate package nope"}, "sh", "-c", script)
	if err == nil || err.Error() != "exit status 100" {
		t.Fatalf("runLogged error = %v, want exit status 100", err)
	}
	lines := strings.Split(out, "\n")
	if len(lines) != 21 || lines[0] != "" || lines[1] != "step 12" || lines[20] != "E: Unable to locate package nope" {
		t.Errorf("runLogged tail = %q, want a newline then steps 12-30 and the stderr line", out)
	}
	if out, err := runLogged(ctx, nil, "sh", "-c", "echo fine"); err != nil || out != "" {
		t.Errorf("a build that succeeds = %q, %v", out, err)
	}
}
