//go:build !banger_front

package cli

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func sha(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// runtimeFixture writes a manifest of local artifacts, an agent and a
// config pointing runtime_dir into a temp dir.
func runtimeFixture(t *testing.T, kernelSum string) (env map[string]string, manifest, agent, rt string) {
	t.Helper()
	dir := t.TempDir()
	fc := []byte("#!/bin/sh\necho 'Firecracker v1.16.1'\n")
	kernel := []byte("kernel")
	os.WriteFile(filepath.Join(dir, "fc"), fc, 0o755)
	os.WriteFile(filepath.Join(dir, "vmlinux"), kernel, 0o644)
	if kernelSum == "" {
		kernelSum = sha(kernel)
	}
	manifest = filepath.Join(dir, "runtime-bundle.toml")
	os.WriteFile(manifest, []byte(fmt.Sprintf("[firecracker]\npath = \"fc\"\nsha256 = %q\n[kernel]\npath = \"vmlinux\"\nsha256 = %q\n", sha(fc), kernelSum)), 0o644)
	agent = filepath.Join(dir, "banger-agent")
	os.WriteFile(agent, []byte("agent"), 0o755)
	rt = filepath.Join(dir, "rt")
	env = envWithConfig(t, fmt.Sprintf("runtime_dir = %q\n", rt))
	return env, manifest, agent, rt
}

func TestRuntimeInstallAndShow(t *testing.T) {
	env, manifest, agent, rt := runtimeFixture(t, "")
	out, errOut, code := runCLI(t, env, "runtime", "install", "--manifest", manifest, "--agent", agent)
	if code != 0 {
		t.Fatalf("install: exit %d: %s %s", code, out, errOut)
	}
	if !strings.Contains(out, "installed runtime bundle in "+rt) || !strings.Contains(out, "vsock_agent_path") {
		t.Fatalf("install output: %s", out)
	}
	out, errOut, code = runCLI(t, env, "runtime", "show")
	if code != 0 || !strings.Contains(out, "firecracker --version: Firecracker v1.16.1") || strings.Count(out, " ok") != 5 {
		t.Fatalf("show: exit %d\n%s\n%s", code, out, errOut)
	}
	os.WriteFile(filepath.Join(rt, "vmlinux"), []byte("changed"), 0o644)
	out, _, code = runCLI(t, env, "runtime", "show", "--json")
	var got runtimeShow
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("show --json: %v: %s", err, out)
	}
	if code != ExitFailed || got.OK {
		t.Fatalf("tampered kernel: exit %d ok %v", code, got.OK)
	}
	for _, f := range got.Files {
		if (f.Role == "kernel_path") != (f.Status == "mismatch") {
			t.Fatalf("%s: %s", f.Role, f.Status)
		}
	}
}

func TestRuntimeInstallRefusals(t *testing.T) {
	env, manifest, agent, rt := runtimeFixture(t, strings.Repeat("a", 64))
	_, errOut, code := runCLI(t, env, "runtime", "install", "--manifest", manifest, "--agent", agent)
	if code != ExitFailed || !strings.Contains(errOut, "checksum mismatch for kernel") || !strings.Contains(errOut, strings.Repeat("a", 64)) {
		t.Fatalf("mismatch: exit %d: %s", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(rt, "bundle.json")); !os.IsNotExist(err) {
		t.Fatalf("bundle.json written after a refused install: %v", err)
	}
	_, errOut, code = runCLI(t, env, "runtime", "install", "--manifest", manifest, "--agent", agent, "--sha256-override", "kernel")
	if code != ExitUsage || !strings.Contains(errOut, "NAME=SHA256") {
		t.Fatalf("bad override: exit %d: %s", code, errOut)
	}
	_, errOut, code = runCLI(t, env, "runtime", "install", "--manifest", filepath.Join(t.TempDir(), "none.toml"), "--agent", agent)
	if code != ExitUsage || !strings.Contains(errOut, "reading manifest") {
		t.Fatalf("missing manifest: exit %d: %s", code, errOut)
	}
	_, errOut, code = runCLI(t, env, "runtime", "show")
	if code != ExitFailed || !strings.Contains(errOut, "banger runtime install") {
		t.Fatalf("show without bundle: exit %d: %s", code, errOut)
	}
}

// TestRuntimeOfflineAndJSON: an install whose artifacts are unreachable
// names each on its own line with the offline route and installs nothing;
// override sums are checked before anything happens (exit 2); `runtime show
// --json` prints JSON without a bundle too.
func TestRuntimeOfflineAndJSON(t *testing.T) {
	env, _, agent, rt := runtimeFixture(t, "")
	out, errOut, code := runCLI(t, env, "runtime", "show", "--json")
	var got runtimeShow
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("show --json without a bundle is not JSON: %v: %q (stderr %q)", err, out, errOut)
	}
	if code != ExitFailed || got.Installed || got.OK || got.Dir != rt || !strings.Contains(got.Error, "banger runtime install") || got.Files == nil {
		t.Fatalf("show --json without a bundle: exit %d %+v", code, got)
	}
	if !strings.Contains(out, `"installed": false`) {
		t.Fatalf("no installed: false in %s", out)
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "https://" + l.Addr().String()
	l.Close()
	manifest := filepath.Join(t.TempDir(), "runtime-bundle.toml")
	os.WriteFile(manifest, []byte(fmt.Sprintf("[firecracker]\nurl = %q\nsha256 = %q\n[kernel]\nurl = %q\nsha256 = %q\n",
		dead+"/fc.tgz", strings.Repeat("a", 64), dead+"/vmlinux", strings.Repeat("b", 64))), 0o644)
	_, errOut, code = runCLI(t, env, "runtime", "install", "--manifest", manifest, "--agent", agent)
	lines := strings.Split(strings.TrimSpace(errOut), "\n")
	if code != ExitFailed || len(lines) < 3 {
		t.Fatalf("offline install: exit %d: %s", code, errOut)
	}
	lines = lines[len(lines)-3:]
	for i, name := range []string{"firecracker", "kernel"} {
		if !strings.HasPrefix(lines[i], "banger: cannot fetch "+name+" from "+dead) || !strings.Contains(lines[i], "path =") || !strings.Contains(lines[i], "--manifest") {
			t.Errorf("line %q: want the artifact %s and the offline route", lines[i], name)
		}
	}
	if lines[2] != "banger: nothing was installed in "+rt {
		t.Errorf("last line %q", lines[2])
	}
	if _, err := os.Stat(filepath.Join(rt, "bundle.json")); !os.IsNotExist(err) {
		t.Fatalf("bundle.json after an offline install: %v", err)
	}

	for _, ov := range []string{"firecracker=abc", "initrd=" + strings.Repeat("c", 64)} {
		_, errOut, code = runCLI(t, env, "runtime", "install", "--manifest", manifest, "--agent", agent, "--sha256-override", ov)
		if code != ExitUsage || !strings.Contains(errOut, "--sha256-override") || strings.Contains(errOut, "cannot fetch") {
			t.Errorf("--sha256-override %s: exit %d: %s", ov, code, errOut)
		}
	}
}

// TestSHA256Overrides: the runtime install flag's values are refused as
// usage errors before anything is fetched.
func TestSHA256Overrides(t *testing.T) {
	sum := strings.Repeat("ab", 32)
	ov, err := sha256Overrides([]string{"kernel=" + strings.ToUpper(sum)})
	if err != nil || ov["kernel"] != sum {
		t.Fatalf("good override: %v %v", ov, err)
	}
	for in, want := range map[string]string{
		"firecracker=abc":   "is not a sha256",
		"kernel":            "use NAME=SHA256",
		"=" + sum:           "use NAME=SHA256",
		"kernl=" + sum:      "is not an artifact of the bundle",
		"kernel=" + sum[1:]: "is not a sha256",
	} {
		_, err := sha256Overrides([]string{in})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", in, err, want)
			continue
		}
		if code, _ := classify(err); code != ExitUsage {
			t.Errorf("%q: exit %d, want 2", in, code)
		}
	}
}
