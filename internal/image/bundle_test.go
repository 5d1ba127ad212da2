package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// tgz builds a gzip-compressed tar of name -> content.
func tgz(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for name, content := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: int64(len(content)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(content))
	}
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

// fixtureServer serves artifacts over TLS on loopback. "corrupt" paths
// serve other bytes than their name promises.
type fixtureServer struct {
	srv   *httptest.Server
	files map[string][]byte
	hits  map[string]int
}

func newFixtureServer(t *testing.T, files map[string][]byte) *fixtureServer {
	t.Helper()
	fs := &fixtureServer{files: files, hits: map[string]int{}}
	fs.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fs.hits[r.URL.Path]++
		b, ok := fs.files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(b)
	}))
	t.Cleanup(fs.srv.Close)
	return fs
}

// unreachableURL is an https URL on a loopback port nothing listens on.
func unreachableURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "https://" + addr + "/vmlinux"
}

func writeManifest(t *testing.T, dir, body string) *Manifest {
	t.Helper()
	p := filepath.Join(dir, "runtime-bundle.toml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	m, _, err := LoadManifest(p)
	if err != nil {
		t.Fatalf("LoadManifest: %v", err)
	}
	return m
}

func fakeAgent(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "banger-agent")
	if err := os.WriteFile(p, []byte("#!/bin/sh\necho agent\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestInstallFromLoopbackServer(t *testing.T) {
	fcBin := "#!/bin/sh\necho 'Firecracker v1.16.1'\n"
	fcTar := tgz(t, map[string]string{"release-v1.16.1-x86_64/firecracker-v1.16.1-x86_64": fcBin, "release-v1.16.1-x86_64/jailer-v1.16.1-x86_64": "jailer"})
	kernel := []byte("kernel bytes")
	modules := tgz(t, map[string]string{"lib/modules/6.1.0/modules.dep": "vsock.ko:\n"})
	fs := newFixtureServer(t, map[string][]byte{"/fc.tgz": fcTar, "/vmlinux": kernel, "/modules.tgz": modules})
	mdir := t.TempDir()
	// A local initrd next to the manifest, named by a relative path.
	os.WriteFile(filepath.Join(mdir, "initrd.img"), []byte("initrd"), 0o644)
	m := writeManifest(t, mdir, fmt.Sprintf(`
[firecracker]
url = "%[1]s/fc.tgz"
sha256 = "%[2]s"
member = "release-v1.16.1-x86_64/firecracker-v1.16.1-x86_64"

[kernel]
url = "%[1]s/vmlinux"
sha256 = "%[3]s"

[initrd]
path = "initrd.img"
sha256 = "%[4]s"

[modules]
url = "%[1]s/modules.tgz"
sha256 = "%[5]s"
`, fs.srv.URL, sum(fcTar), sum(kernel), sum([]byte("initrd")), sum(modules)))

	rt := filepath.Join(t.TempDir(), "runtime")
	var progress bytes.Buffer
	b, err := Install(context.Background(), InstallOptions{RuntimeDir: rt, Manifest: m, Agent: fakeAgent(t), Fetcher: Fetcher{Client: fs.srv.Client()}, Progress: &progress})
	if err != nil {
		t.Fatalf("Install: %v", err)
	}
	got, err := os.ReadFile(filepath.Join(rt, FileFirecracker))
	if err != nil || string(got) != fcBin {
		t.Fatalf("firecracker = %q, %v", got, err)
	}
	if fi, _ := os.Stat(filepath.Join(rt, FileFirecracker)); fi.Mode().Perm() != 0o755 {
		t.Fatalf("firecracker mode %v", fi.Mode())
	}
	if got, _ := os.ReadFile(filepath.Join(rt, "modules/lib/modules/6.1.0/modules.dep")); string(got) != "vsock.ko:\n" {
		t.Fatalf("modules tree not unpacked: %q", got)
	}
	fi, err := os.Stat(filepath.Join(rt, FileSSHKey))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("private key: %v %v", fi, err)
	}
	raw, _ := os.ReadFile(filepath.Join(rt, FileSSHKey))
	signer, err := ssh.ParsePrivateKey(raw)
	if err != nil || !strings.Contains(string(raw), "OPENSSH PRIVATE KEY") {
		t.Fatalf("private key is not an OpenSSH key: %v", err)
	}
	pubLine, _ := os.ReadFile(filepath.Join(rt, FileSSHPubKey))
	pub, _, _, _, err := ssh.ParseAuthorizedKey(pubLine)
	if err != nil || !bytes.Equal(pub.Marshal(), signer.PublicKey().Marshal()) || pub.Type() != ssh.KeyAlgoED25519 {
		t.Fatalf("public key %q does not match the private key: %v", pubLine, err)
	}

	// bundle.json names every file with its sha256, and Inspect agrees.
	read, warns, err := ReadBundle(rt)
	if err != nil || len(warns) != 0 {
		t.Fatalf("ReadBundle: %v %v", err, warns)
	}
	if len(read.Files) != len(b.Files) || len(read.Files) != 7 {
		t.Fatalf("bundle files: %v", read.Files)
	}
	if read.Files[RoleKernel].SHA256 != sum(kernel) || read.Files[RoleFirecracker].SHA256 != sum([]byte(fcBin)) {
		t.Fatalf("recorded sums wrong: %+v", read.Files)
	}
	for _, st := range Inspect(rt, read) {
		if st.Status != StatusOK {
			t.Fatalf("%s: %s", st.Role, st.Status)
		}
	}
	if v, err := FirecrackerVersion(context.Background(), filepath.Join(rt, FileFirecracker)); err != nil || v != "Firecracker v1.16.1" {
		t.Fatalf("version %q %v", v, err)
	}
	leftovers, _ := filepath.Glob(filepath.Join(rt, ".install-*"))
	if len(leftovers) != 0 {
		t.Fatalf("staging dirs left: %v", leftovers)
	}

	// A tampered file shows as a mismatch.
	os.WriteFile(filepath.Join(rt, FileKernel), []byte("tampered"), 0o644)
	for _, st := range Inspect(rt, read) {
		if want := map[bool]string{true: StatusMismatch, false: StatusOK}[st.Role == RoleKernel]; st.Status != want {
			t.Fatalf("%s: %s, want %s", st.Role, st.Status, want)
		}
	}

	// A second install keeps the SSH key and replaces the modules tree.
	before, _ := os.ReadFile(filepath.Join(rt, FileSSHKey))
	if _, err := Install(context.Background(), InstallOptions{RuntimeDir: rt, Manifest: m, Agent: fakeAgent(t), Fetcher: Fetcher{Client: fs.srv.Client()}}); err != nil {
		t.Fatalf("second Install: %v", err)
	}
	after, _ := os.ReadFile(filepath.Join(rt, FileSSHKey))
	if !bytes.Equal(before, after) {
		t.Fatal("second install replaced the SSH key")
	}
	if got, _ := os.ReadFile(filepath.Join(rt, FileKernel)); !bytes.Equal(got, kernel) {
		t.Fatal("second install did not restore the kernel")
	}
}

func TestInstallRefusesAndInstallsNothing(t *testing.T) {
	kernel := []byte("kernel bytes")
	fcBin := []byte("#!/bin/sh\necho fc\n")
	fs := newFixtureServer(t, map[string][]byte{"/fc": fcBin, "/vmlinux": kernel, "/corrupt": []byte("kernel bytez")})
	dead := unreachableURL(t)
	tests := []struct {
		name      string
		kernelURL string
		kernelSum string
		overrides map[string]string
		want      []string
		checksum  bool
	}{
		{"corrupted artifact", fs.srv.URL + "/corrupt", sum(kernel), nil, []string{"checksum mismatch for kernel", sum(kernel), sum([]byte("kernel bytez"))}, true},
		{"unreachable url", dead, sum(kernel), nil, []string{"cannot fetch kernel from " + dead, "unreachable", "connection refused", `[kernel] says path = "FILE"`, "--manifest"}, false},
		{"not found", fs.srv.URL + "/missing", sum(kernel), nil, []string{"cannot fetch kernel", "server answered 404", "--manifest"}, false},
		{"missing local file", "file:///nonexistent/vmlinux", sum(kernel), nil, []string{"cannot fetch kernel from file:///nonexistent/vmlinux: /nonexistent/vmlinux: no such file", "fix path ="}, false},
		{"empty sha256", fs.srv.URL + "/vmlinux", "", nil, []string{"[kernel] has no sha256", "--sha256-override kernel=SUM"}, false},
		{"override mismatch", fs.srv.URL + "/vmlinux", "", map[string]string{"kernel": sum([]byte("other"))}, []string{"checksum mismatch for kernel"}, true},
		{"override unknown", fs.srv.URL + "/vmlinux", sum(kernel), map[string]string{"initrd": sum(kernel)}, []string{"no [initrd]"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := writeManifest(t, t.TempDir(), fmt.Sprintf("[firecracker]\nurl = %q\nsha256 = %q\n[kernel]\nurl = %q\nsha256 = %q\n",
				fs.srv.URL+"/fc", sum(fcBin), tt.kernelURL, tt.kernelSum))
			rt := filepath.Join(t.TempDir(), "runtime")
			_, err := Install(context.Background(), InstallOptions{RuntimeDir: rt, Manifest: m, Agent: fakeAgent(t), SHA256Overrides: tt.overrides, Fetcher: Fetcher{Client: fs.srv.Client()}})
			if err == nil {
				t.Fatal("Install succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("error %q does not contain %q", err, w)
				}
			}
			var ce *ChecksumError
			if errors.As(err, &ce) != tt.checksum {
				t.Fatalf("ChecksumError = %v, want %v", errors.As(err, &ce), tt.checksum)
			}
			ents, _ := os.ReadDir(rt)
			if len(ents) != 0 {
				t.Fatalf("runtime dir not empty after a refused install: %v", ents)
			}
		})
	}
	// With the right override an empty manifest sum installs.
	m := writeManifest(t, t.TempDir(), fmt.Sprintf("[firecracker]\nurl = %q\nsha256 = %q\n[kernel]\nurl = %q\nsha256 = \"\"\n", fs.srv.URL+"/fc", sum(fcBin), fs.srv.URL+"/vmlinux"))
	rt := filepath.Join(t.TempDir(), "runtime")
	if _, err := Install(context.Background(), InstallOptions{RuntimeDir: rt, Manifest: m, Agent: fakeAgent(t), SHA256Overrides: map[string]string{"kernel": sum(kernel)}, Fetcher: Fetcher{Client: fs.srv.Client()}}); err != nil {
		t.Fatalf("install with override: %v", err)
	}
}

func TestLoadManifestErrors(t *testing.T) {
	tests := []struct{ name, body, want string }{
		{"unknown table", "[firecraker]\npath = \"x\"\n", "unknown key firecraker"},
		{"both url and path", "[firecracker]\npath = \"x\"\nurl = \"https://e/x\"\n[kernel]\npath = \"k\"\n", "exactly one of url or path"},
		{"http url", "[firecracker]\nurl = \"http://e/x\"\n[kernel]\npath = \"k\"\n", "must start with https://"},
		{"bad sha", "[firecracker]\npath = \"x\"\nsha256 = \"abc\"\n[kernel]\npath = \"k\"\n", "not 64 lowercase hex"},
		{"no kernel", "[firecracker]\npath = \"x\"\n", "[kernel] are required"},
		{"legacy conflict", "vsock_agent_path = \"a\"\nvsock_ping_helper_path = \"b\"\n[firecracker]\npath = \"x\"\n[kernel]\npath = \"k\"\n", "disagree"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "m.toml")
			os.WriteFile(p, []byte(tt.body), 0o644)
			_, _, err := LoadManifest(p)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want %q", err, tt.want)
			}
		})
	}
}

// TestLegacyManifest installs from the fixture manifest that names the agent
// with vsock_ping_helper_path; the agent then comes from that key.
func TestLegacyManifest(t *testing.T) {
	m, warns, err := LoadManifest("testdata/legacy-manifest/runtime-bundle.toml")
	if err != nil {
		t.Fatal(err)
	}
	if len(warns) != 1 || !strings.Contains(warns[0], "vsock_agent_path") {
		t.Fatalf("warnings %v: want one naming vsock_agent_path", warns)
	}
	agent, err := ResolveAgent("", t.TempDir(), m)
	if err != nil || filepath.Base(agent) != LegacyFileAgent {
		t.Fatalf("ResolveAgent = %q, %v", agent, err)
	}
	rt := filepath.Join(t.TempDir(), "runtime")
	if _, err := Install(context.Background(), InstallOptions{RuntimeDir: rt, Manifest: m, Agent: agent}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(rt, FileAgent)); !strings.Contains(string(b), "legacy agent") {
		t.Fatalf("agent not installed under its new name: %q", b)
	}
	// The --agent flag wins over the manifest.
	flag := fakeAgent(t)
	if got, err := ResolveAgent(flag, "", m); err != nil || got != flag {
		t.Fatalf("ResolveAgent(flag) = %q, %v", got, err)
	}
	if _, err := ResolveAgent("", t.TempDir(), nil); err == nil || !strings.Contains(err.Error(), "--agent") {
		t.Fatalf("no agent anywhere: %v", err)
	}
}

// TestLegacyBundle reads the fixture bundle made by an earlier banger: the
// agent role under vsock_ping_helper_path and the file banger-vsock-pingd.
func TestLegacyBundle(t *testing.T) {
	b, warns, err := ReadBundle("testdata/legacy-bundle")
	if err != nil {
		t.Fatal(err)
	}
	if len(warns) != 2 || !strings.Contains(warns[0], "vsock_agent_path") || !strings.Contains(warns[1], FileAgent) {
		t.Fatalf("warnings %q: want one naming vsock_agent_path and one naming banger-agent", warns)
	}
	if b.Files[RoleAgent].Path != LegacyFileAgent {
		t.Fatalf("agent role = %+v", b.Files[RoleAgent])
	}
	for _, st := range Inspect("testdata/legacy-bundle", b) {
		if st.Status != StatusOK {
			t.Fatalf("%s: %s", st.Role, st.Status)
		}
	}
	// Installing over it replaces the legacy agent file.
	rt := t.TempDir()
	for _, f := range []string{"bundle.json", "firecracker", "vmlinux", LegacyFileAgent} {
		if err := copyFile(filepath.Join("testdata/legacy-bundle", f), filepath.Join(rt, f), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	m, _, err := LoadManifest("testdata/legacy-manifest/runtime-bundle.toml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Install(context.Background(), InstallOptions{RuntimeDir: rt, Manifest: m, Agent: fakeAgent(t)}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(rt, LegacyFileAgent)); !os.IsNotExist(err) {
		t.Fatalf("legacy agent file left: %v", err)
	}
	if _, warns, err := ReadBundle(rt); err != nil || len(warns) != 0 {
		t.Fatalf("new bundle: %v %v", err, warns)
	}
}

func TestReadBundleMissing(t *testing.T) {
	_, _, err := ReadBundle(t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "banger runtime install") {
		t.Fatalf("err %v", err)
	}
}
