//go:build system

package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// `make install` into a prefix whose bin is not on PATH installs the
// binaries and the runtime manifest and prints the line to add to PATH.
func TestMakeInstallSaysHowToReachIt(t *testing.T) {
	requireRoot(t)
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	prefix := t.TempDir()
	cmd := exec.Command("make", "-s", "-C", root, "install", "PREFIX="+prefix)
	cmd.Env = append(os.Environ(), "PATH=/usr/local/go/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make install: %v\n%s", err, out)
	}
	for _, f := range []string{"bin/banger", "bin/banger-full", "bin/bangerd", "bin/banger-agent", "share/banger/runtime-bundle.toml"} {
		if _, err := os.Stat(filepath.Join(prefix, f)); err != nil {
			t.Errorf("make install did not install %s: %v", f, err)
		}
	}
	if want := `export PATH="` + prefix + `/bin:$PATH"`; !strings.Contains(string(out), want) {
		t.Errorf("make install output lacks %q:\n%s", want, out)
	}
	// With the prefix on PATH it says nothing about PATH.
	cmd = exec.Command("make", "-s", "-C", root, "install", "PREFIX="+prefix)
	cmd.Env = append(os.Environ(), "PATH="+prefix+"/bin:/usr/local/go/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	if out, err = cmd.CombinedOutput(); err != nil || strings.Contains(string(out), "export PATH") {
		t.Errorf("make install with the prefix on PATH: %v\n%s", err, out)
	}
}

// scripts/test.sh (`make test`) runs every tier even after one fails,
// prints one result line per tier and exits non-zero. A stand-in go makes
// the unit tier fail; the test runs as nobody so the image tier skips.
func TestTestTiersAllRunAndReport(t *testing.T) {
	requireRoot(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("needs setpriv (util-linux; CI installs it)")
	}
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "build", "bin")); err != nil {
		t.Skipf("needs the build directory (make build runs before the tests): %v", err)
	}
	dir, err := os.MkdirTemp("/tmp", "bangertiers-") // reachable by nobody, unlike t.TempDir's parent
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o777)
	calls := filepath.Join(dir, "calls")
	stub := filepath.Join(dir, "go")
	script := `#!/bin/sh
echo "$*" >> ` + calls + `
case "$*" in
  *"-tags system"*) exit 0 ;;
  test*) echo "FAIL	banger/internal/fake"; exit 1 ;;
esac
exit 0
`
	if err := os.WriteFile(stub, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "bash", filepath.Join(root, "scripts", "test.sh"))
	cmd.Dir = root
	cmd.Env = []string{"PATH=/usr/local/go/bin:/usr/bin:/bin", "HOME=" + dir, "GO=" + stub, "GOCACHE=" + filepath.Join(dir, "cache")}
	out, err := cmd.CombinedOutput()
	if code := exitCode(err); code == 0 {
		t.Fatalf("test.sh exited 0 with a failing unit tier:\n%s", out)
	}
	for _, want := range []string{"tier build: PASS", "tier vet: PASS", "tier unit: FAIL", "tier system: PASS", "tier image: SKIP"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("test.sh output lacks %q:\n%s", want, out)
		}
	}
	b, _ := os.ReadFile(calls)
	if !strings.Contains(string(b), "-tags system") {
		t.Errorf("the system tier did not run after the unit tier failed; go was called with:\n%s", b)
	}
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}
