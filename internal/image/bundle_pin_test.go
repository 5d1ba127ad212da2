package image

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRepoManifestPinned fails while any artifact of the repository's
// runtime-bundle.toml has an empty (or malformed) sha256: a fresh checkout
// must install without --sha256-override.
func TestRepoManifestPinned(t *testing.T) {
	m, warns, err := LoadManifest(filepath.Join("..", "..", "runtime-bundle.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(warns) != 0 {
		t.Errorf("repo manifest warnings: %v", warns)
	}
	n := 0
	for _, name := range ArtifactNames() {
		a := m.Get(name)
		if a == nil {
			continue
		}
		n++
		if !ValidSHA256(a.SHA256) {
			t.Errorf("[%s] (%s) has sha256 %q: pin it", name, a.Source(), a.SHA256)
		}
		if a.URL != "" && !strings.HasPrefix(a.URL, "https://") {
			t.Errorf("[%s] url %s is not https", name, a.URL)
		}
	}
	if n < 2 {
		t.Fatalf("repo manifest names %d artifacts, want at least firecracker and kernel", n)
	}
}

// treeState records every file under dir with its content hash, so a
// refused install can be shown to have changed nothing.
func treeState(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.IsDir() {
			out[rel] = "dir"
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		out[rel] = sum(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestInstallOverBundleRefusalsChangeNothing installs a bundle from a
// loopback https server, then tries installs that must be refused (a wrong
// sum, unreachable URLs) over it: the runtime dir stays byte for byte as it
// was, and every artifact that cannot be fetched is named on its own line
// with the offline route.
func TestInstallOverBundleRefusalsChangeNothing(t *testing.T) {
	kernel := []byte("kernel bytes")
	fcBin := []byte("#!/bin/sh\necho fc\n")
	fs := newFixtureServer(t, map[string][]byte{"/fc": fcBin, "/vmlinux": kernel, "/vmlinux-new": []byte("new kernel")})
	good := fmt.Sprintf("[firecracker]\nurl = %q\nsha256 = %q\n[kernel]\nurl = %q\nsha256 = %q\n", fs.srv.URL+"/fc", sum(fcBin), fs.srv.URL+"/vmlinux", sum(kernel))
	rt := filepath.Join(t.TempDir(), "runtime")
	fetch := Fetcher{Client: fs.srv.Client()}
	if _, err := Install(context.Background(), InstallOptions{RuntimeDir: rt, Manifest: writeManifest(t, t.TempDir(), good), Agent: fakeAgent(t), Fetcher: fetch}); err != nil {
		t.Fatalf("first install: %v", err)
	}
	if got, _ := os.ReadFile(filepath.Join(rt, FileKernel)); string(got) != string(kernel) {
		t.Fatalf("kernel not installed: %q", got)
	}
	before := treeState(t, rt)

	// A new kernel whose manifest sum is wrong.
	wrong := fmt.Sprintf("[firecracker]\nurl = %q\nsha256 = %q\n[kernel]\nurl = %q\nsha256 = %q\n", fs.srv.URL+"/fc", sum(fcBin), fs.srv.URL+"/vmlinux-new", sum(kernel))
	_, err := Install(context.Background(), InstallOptions{RuntimeDir: rt, Manifest: writeManifest(t, t.TempDir(), wrong), Agent: fakeAgent(t), Fetcher: fetch})
	var ce *ChecksumError
	if !errors.As(err, &ce) || ce.Artifact != ArtifactKernel {
		t.Fatalf("wrong sum: %v, want a ChecksumError for the kernel", err)
	}
	if after := treeState(t, rt); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("a refused install changed the runtime dir:\nbefore %v\nafter  %v", before, after)
	}

	// Offline: neither artifact reachable. Both are named, one line each.
	dead := unreachableURL(t)
	offline := fmt.Sprintf("[firecracker]\nurl = %q\nsha256 = %q\nmember = \"fc\"\n[kernel]\nurl = %q\nsha256 = %q\n", dead+"-fc.tgz", sum(fcBin), dead, sum(kernel))
	_, err = Install(context.Background(), InstallOptions{RuntimeDir: rt, Manifest: writeManifest(t, t.TempDir(), offline), Agent: fakeAgent(t), Fetcher: fetch})
	if err == nil {
		t.Fatal("offline install succeeded")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 2 {
		t.Fatalf("want one line per unreachable artifact, got %q", lines)
	}
	for i, name := range []string{ArtifactFirecracker, ArtifactKernel} {
		if !strings.HasPrefix(lines[i], "cannot fetch "+name+" from https://127.0.0.1:") || !strings.Contains(lines[i], "--manifest") || !strings.Contains(lines[i], "["+name+"] says path =") {
			t.Errorf("line %d = %q: want the artifact %s and the offline route", i, lines[i], name)
		}
		var fe *FetchError
		if !errors.As(err, &fe) || !fe.Remote {
			t.Errorf("not a remote FetchError: %v", err)
		}
	}
	if after := treeState(t, rt); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("an offline install changed the runtime dir:\nbefore %v\nafter  %v", before, after)
	}
}

func TestFindManifest(t *testing.T) {
	root := t.TempDir()
	write := func(p string) string {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("[firecracker]\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	checkout := filepath.Join(root, "src", "banger")
	inCheckout := write(filepath.Join(checkout, ManifestName))
	prefix := filepath.Join(root, "home", ".local")
	installed := write(filepath.Join(prefix, "share", "banger", ManifestName))
	cwd := filepath.Join(root, "elsewhere")
	os.MkdirAll(cwd, 0o755)
	// A manifest in the directory above ~/.local/bin is not a checkout's.
	write(filepath.Join(root, "home", ManifestName))

	tests := []struct {
		name, flag, cwd, exeDir, want string
	}{
		{"flag wins", "/x/m.toml", checkout, filepath.Join(checkout, "build", "bin"), "/x/m.toml"},
		{"working directory", "", checkout, filepath.Join(prefix, "bin"), inCheckout},
		{"checkout of the binary", "", cwd, filepath.Join(checkout, "build", "bin"), inCheckout},
		{"installed beside the binaries", "", cwd, filepath.Join(prefix, "bin"), installed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := FindManifest(tt.flag, tt.cwd, tt.exeDir)
			if err != nil || got != tt.want {
				t.Fatalf("FindManifest = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
	_, err := FindManifest("", cwd, filepath.Join(root, "opt", "bin"))
	if err == nil || !strings.Contains(err.Error(), "--manifest FILE") || !strings.Contains(err.Error(), filepath.Join(root, "opt", "share", "banger", ManifestName)) {
		t.Fatalf("no manifest anywhere: %v", err)
	}
}
