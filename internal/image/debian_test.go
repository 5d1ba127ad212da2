package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"banger/internal/hostops"
)

// fakeDebianHost is a stateful stand-in for the privileged seam: it keeps
// the staging directories it made, what it was handed, and can fail at one
// op.
type fakeDebianHost struct {
	mu       sync.Mutex
	failAt   string
	staging  map[string]bool // live staging dirs
	made     int
	custom   hostops.CustomizeArgs
	agent    []byte
	modules  []string
	mkfsSize int64
}

func (f *fakeDebianHost) ImageDebootstrap(ctx context.Context, a hostops.DebootstrapArgs) (hostops.DebootstrapResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failAt == "debootstrap" {
		return hostops.DebootstrapResult{}, errors.New("debootstrap bookworm: exit status 1")
	}
	if a.Suite != hostops.DebianSuite {
		return hostops.DebootstrapResult{}, errors.New("bad suite")
	}
	f.made++
	s := "/var/tmp/banger-build-" + strings.Repeat("0", 15) + string(rune('0'+f.made))
	if f.staging == nil {
		f.staging = map[string]bool{}
	}
	f.staging[s] = true
	return hostops.DebootstrapResult{Staging: s, Mirror: "http://mirror.example/debian"}, nil
}

func (f *fakeDebianHost) ImageCustomize(ctx context.Context, a hostops.CustomizeArgs) (hostops.CustomizeResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.staging[a.Staging] {
		return hostops.CustomizeResult{}, errors.New("unknown staging")
	}
	f.custom = a
	// the inputs must still exist while root reads them
	b, err := os.ReadFile(a.AgentPath)
	if err != nil {
		return hostops.CustomizeResult{}, err
	}
	f.agent = b
	if a.ModulesDir != "" {
		_ = filepath.WalkDir(a.ModulesDir, func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				rel, _ := filepath.Rel(a.ModulesDir, p)
				f.modules = append(f.modules, rel)
			}
			return nil
		})
	}
	if f.failAt == "customize" {
		return hostops.CustomizeResult{}, errors.New("customizing the image: exit status 100\nE: Unable to locate package nope")
	}
	return hostops.CustomizeResult{PackagesHash: "abc123"}, nil
}

func (f *fakeDebianHost) ImageMkfs(ctx context.Context, a hostops.MkfsArgs) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.staging[a.Staging] {
		return errors.New("unknown staging")
	}
	if f.failAt == "mkfs" {
		return errors.New("mkfs.ext4: no space")
	}
	f.mkfsSize = a.SizeBytes
	fh, err := os.OpenFile(a.Out, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer fh.Close()
	return fh.Truncate(a.SizeBytes)
}

func (f *fakeDebianHost) ImageRemoveStaging(ctx context.Context, staging string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.staging[staging] {
		return errors.New("unknown staging")
	}
	delete(f.staging, staging)
	return nil
}

func TestBuildDebian(t *testing.T) {
	for _, tc := range []struct {
		name    string
		failAt  string
		wantErr string
	}{
		{"ok", "", ""},
		{"debootstrap fails", "debootstrap", "debootstrap bookworm"},
		{"customize fails", "customize", "Unable to locate package"},
		{"mkfs fails", "mkfs", "no space"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			agent := filepath.Join(dir, "agent-src")
			if err := os.WriteFile(agent, []byte("\x7fELF agent"), 0o755); err != nil {
				t.Fatal(err)
			}
			mods := filepath.Join(dir, "modules", "6.1.0")
			if err := os.MkdirAll(filepath.Join(mods, "kernel"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(mods, "kernel", "vsock.ko"), []byte("ko"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink("/usr/src/linux", filepath.Join(mods, "build")); err != nil {
				t.Fatal(err)
			}
			host := &fakeDebianHost{failAt: tc.failAt}
			var mu sync.Mutex
			var events []string
			out := filepath.Join(dir, "img", "rootfs.ext4")
			if err := os.MkdirAll(filepath.Dir(out), 0o700); err != nil {
				t.Fatal(err)
			}
			res, err := BuildDebian(context.Background(), host, DebianOptions{
				Out: out, WorkDir: filepath.Join(dir, "img", "build"), SizeBytes: 1 << 30,
				AgentPath: agent, SSHKeyPath: filepath.Join(dir, "runtime", "id_ed25519"),
				ModulesDir: filepath.Join(dir, "modules"),
				Progress: func(stage, msg string, el time.Duration) {
					mu.Lock()
					events = append(events, stage+" "+msg)
					mu.Unlock()
				},
			})
			if len(host.staging) != 0 {
				t.Errorf("staging left behind: %v", host.staging)
			}
			if _, serr := os.Stat(filepath.Join(dir, "img", "build")); !errors.Is(serr, os.ErrNotExist) {
				t.Errorf("work dir left behind (stat: %v)", serr)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				if _, serr := os.Stat(out); !errors.Is(serr, os.ErrNotExist) {
					t.Errorf("partial image left at %s", out)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if res.PackagesHash != "abc123" || res.Mirror != "http://mirror.example/debian" || res.SizeBytes != 1<<30 {
				t.Errorf("result = %+v", res)
			}
			var stages []string
			for _, s := range res.Stages {
				stages = append(stages, s.Stage)
			}
			if got := strings.Join(stages, ","); got != "prepare,debootstrap,customize,mkfs" {
				t.Errorf("stages = %s", got)
			}
			if string(host.agent) != "\x7fELF agent" {
				t.Errorf("agent handed to root = %q", host.agent)
			}
			if strings.Join(host.modules, ",") != "6.1.0/kernel/vsock.ko" {
				t.Errorf("modules handed to root = %v (symlinks must be skipped)", host.modules)
			}
			if !strings.HasPrefix(host.custom.AgentPath, filepath.Join(dir, "img", "build")) {
				t.Errorf("agent path %s is not the copy in the work dir", host.custom.AgentPath)
			}
			pub, err := os.ReadFile(filepath.Join(dir, "runtime", "id_ed25519.pub"))
			if err != nil {
				t.Fatalf("key pair not generated: %v", err)
			}
			if strings.TrimSpace(string(pub)) != host.custom.AuthorizedKey {
				t.Errorf("authorized key %q, want the bundle key %q", host.custom.AuthorizedKey, pub)
			}
			mu.Lock()
			joined := strings.Join(events, "\n")
			mu.Unlock()
			for _, want := range []string{"debootstrap debootstrap --variant=minbase bookworm", "customize done", "mkfs done"} {
				if !strings.Contains(joined, want) {
					t.Errorf("progress lacks %q:\n%s", want, joined)
				}
			}
		})
	}
}

func TestBuildDebianRefusesExistingOutput(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "rootfs.ext4")
	if err := os.WriteFile(out, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	host := &fakeDebianHost{}
	_, err := BuildDebian(context.Background(), host, DebianOptions{Out: out, WorkDir: filepath.Join(dir, "w"),
		AgentPath: "/nonexistent", SSHKeyPath: filepath.Join(dir, "k")})
	if err == nil || !strings.Contains(err.Error(), "creating image file") {
		t.Fatalf("err = %v", err)
	}
	if b, _ := os.ReadFile(out); string(b) != "keep" {
		t.Errorf("existing file changed")
	}
	if host.made != 0 {
		t.Errorf("debootstrap ran")
	}
}

func TestBuildDebianMissingAgent(t *testing.T) {
	dir := t.TempDir()
	host := &fakeDebianHost{}
	_, err := BuildDebian(context.Background(), host, DebianOptions{Out: filepath.Join(dir, "rootfs.ext4"),
		WorkDir: filepath.Join(dir, "w"), AgentPath: filepath.Join(dir, "no-agent"), SSHKeyPath: filepath.Join(dir, "k")})
	if err == nil || !strings.Contains(err.Error(), "vsock_agent_path") {
		t.Fatalf("err = %v, want a hint at vsock_agent_path", err)
	}
	if host.made != 0 {
		t.Errorf("debootstrap ran without an agent")
	}
}

func TestEnsureKeyPair(t *testing.T) {
	dir := t.TempDir()
	priv := filepath.Join(dir, "rt", "id_ed25519")
	line, err := EnsureKeyPair(priv)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(priv); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("private key: %v %v", fi, err)
	}
	if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line)); err != nil {
		t.Fatalf("public line %q: %v", line, err)
	}
	again, err := EnsureKeyPair(priv)
	if err != nil || again != line {
		t.Fatalf("second call = %q, %v; want the same key", again, err)
	}
	// a lost .pub is derived from the private key
	if err := os.Remove(priv + ".pub"); err != nil {
		t.Fatal(err)
	}
	derived, err := EnsureKeyPair(priv)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(strings.Fields(derived)[:2], " ") != strings.Join(strings.Fields(line)[:2], " ") {
		t.Errorf("derived %q, want the key of %q", derived, line)
	}
	// garbage is refused, not overwritten
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad+".pub", []byte("not a key"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureKeyPair(bad); err == nil || !strings.Contains(err.Error(), "not an OpenSSH public key") {
		t.Errorf("err = %v", err)
	}
	if _, err := EnsureKeyPair(""); err == nil {
		t.Error("empty path accepted")
	}
}

func TestPackagesHashAndStale(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, PackagesFile)
	if err := os.WriteFile(p, []byte("git\ncurl\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h, err := PackagesHash(p)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("git\ncurl\n"))
	if h != hex.EncodeToString(sum[:]) {
		t.Errorf("hash = %s", h)
	}
	if _, err := PackagesHash(filepath.Join(dir, "none")); err == nil {
		t.Error("missing file hashed")
	}
	for _, tc := range []struct {
		built, current string
		want           bool
	}{
		{h, h, false},
		{"old", h, true},
		{"", h, false}, // registered image
		{h, "", false}, // current list unknown
	} {
		if got := Stale(tc.built, tc.current); got != tc.want {
			t.Errorf("Stale(%q, %q) = %v", tc.built, tc.current, got)
		}
	}
}

func TestFindScripts(t *testing.T) {
	mk := func(root string) {
		for _, f := range []string{PackagesFile, DebianCustomize, DebianEnterChroot} {
			p := filepath.Join(root, f)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	mk(filepath.Join(repo, "images"))
	helper := filepath.Join(dir, "libexec")
	mk(filepath.Join(helper, "images"))
	env := filepath.Join(dir, "env")
	mk(env)
	partial := filepath.Join(dir, "partial")
	if err := os.MkdirAll(partial, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(partial, PackagesFile), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	none := func(string) string { return "" }
	for _, tc := range []struct {
		name   string
		exe    string
		getenv func(string) string
		want   string
	}{
		{"repo build/bin", filepath.Join(repo, "build", "bin", "bangerd"), none, filepath.Join(repo, "images")},
		{"next to helper", filepath.Join(helper, "banger"), none, filepath.Join(helper, "images")},
		{"env wins", filepath.Join(helper, "banger"), func(k string) string {
			if k == ScriptsEnv {
				return env
			}
			return ""
		}, env},
		{"incomplete env dir is skipped", filepath.Join(helper, "banger"), func(k string) string { return partial }, filepath.Join(helper, "images")},
		{"nothing", filepath.Join(dir, "elsewhere", "bin", "x"), none, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.want == "" && FindScripts("", none) != "" {
				t.Skip("this machine has the helper's images/ installed, which is always found")
			}
			if got := FindScripts(tc.exe, tc.getenv); got != tc.want {
				t.Errorf("FindScripts = %q, want %q", got, tc.want)
			}
		})
	}
}
