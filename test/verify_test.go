//go:build system

package test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// verifyHeadings are the diagnostics sections scripts/verify.sh must print
// on a failure.
var verifyHeadings = []string{
	"=== diagnostics: vm show --json ===",
	"=== diagnostics: firecracker log (last 50 lines) ===",
	"=== diagnostics: serial console (last 50 lines) ===",
	"=== diagnostics: daemon log (last 50 lines) ===",
	"=== diagnostics: tap and bridge ===",
	"=== diagnostics: api and vsock sockets ===",
	"=== diagnostics: nat ruleset ===",
}

func verifyScript(t *testing.T) string {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, "scripts", "verify.sh")
}

func TestVerifyScriptLints(t *testing.T) {
	script := verifyScript(t)
	if out, err := exec.Command("bash", "-n", script).CombinedOutput(); err != nil {
		t.Fatalf("bash -n: %v: %s", err, out)
	}
	if _, err := exec.LookPath("shellcheck"); err != nil {
		t.Skip("needs shellcheck (CI installs it)")
	}
	if out, err := exec.Command("shellcheck", script).CombinedOutput(); err != nil {
		t.Fatalf("shellcheck: %v:\n%s", err, out)
	}
}

// runVerify runs scripts/verify.sh --nat inside the env's namespace with
// PATH led by pathFirst, and returns its output, exit code and duration.
func runVerify(t *testing.T, e *env, pathFirst string) (string, int, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", e.ns, "bash", verifyScript(t), "--nat")
	cmd.Env = append(e.environ(), "PATH="+pathFirst+":"+os.Getenv("PATH"), "VERIFY_DEADLINE=15")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	begin := time.Now()
	err := cmd.Run()
	took := time.Since(begin)
	t.Logf("verify.sh took %v:\n%s", took, out.String())
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("running verify.sh: %v", err)
		}
		code = ee.ExitCode()
	}
	return out.String(), code, took
}

// assertNothingLeft checks that no VM, Firecracker process, tap or VM
// directory is left in the env.
func assertNothingLeft(t *testing.T, e *env) {
	t.Helper()
	if vms := e.vms(); len(vms) != 0 {
		t.Fatalf("verify.sh left vms behind: %+v", vms)
	}
	if p := e.fcProcesses(); len(p) != 0 {
		t.Fatalf("firecracker processes left: %v", p)
	}
	if taps := e.taps(); len(taps) != 0 {
		t.Fatalf("taps left: %v", taps)
	}
	if ents, _ := os.ReadDir(filepath.Join(e.state, "vms")); len(ents) != 0 {
		t.Fatalf("vm directories left: %v", ents)
	}
}

func newVerifyEnv(t *testing.T) *env {
	t.Helper()
	key := filepath.Join(t.TempDir(), "id_ed25519")
	writeSSHKey(t, key)
	e := newEnv(t, "ssh_key_path = \""+key+"\"\n")
	e.registerImage()
	return e
}

// TestVerifyAgainstFake runs scripts/verify.sh against fcfake with the real
// ssh: the VM becomes healthy but nothing answers ssh, so it must fail in
// the ssh phase within its deadline, print every diagnostics section and
// delete its VM.
func TestVerifyAgainstFake(t *testing.T) {
	sshBin, err := exec.LookPath("ssh")
	if err != nil {
		t.Skip("needs the OpenSSH client (CI installs openssh-client)")
	}
	e := newVerifyEnv(t)
	log, code, took := runVerify(t, e, e.bins.dir+":"+filepath.Dir(sshBin))
	if code != 1 {
		t.Fatalf("verify.sh exited %d, want 1", code)
	}
	m := regexp.MustCompile(`verify: \[ *(\d+)s\] FAIL in phase ssh: no ssh into`).FindStringSubmatch(log)
	if m == nil {
		t.Fatalf("did not fail in the ssh phase")
	}
	if !strings.Contains(log, "is running and healthy") {
		t.Fatalf("did not wait for readiness before ssh")
	}
	// The 15 s deadline bounds create, readiness and ssh (an attempt is cut
	// off at it); diagnostics and cleanup come on top.
	if secs, _ := strconv.Atoi(m[1]); secs > 17 {
		t.Fatalf("failed %ds after the start with a 15s deadline", secs)
	}
	if took > 40*time.Second {
		t.Fatalf("took %v in all", took)
	}
	last := 0
	for _, h := range verifyHeadings {
		i := strings.Index(log, h)
		if i < 0 {
			t.Fatalf("no diagnostics section %q", h)
		}
		if i < last {
			t.Fatalf("section %q out of order", h)
		}
		last = i
	}
	nat := log[strings.Index(log, "=== diagnostics: nat ruleset ==="):]
	for _, want := range []string{`"state": "running"`, "master banger0", "fc.sock", "Running Firecracker", "bangerd serving"} {
		if !strings.Contains(log, want) {
			t.Errorf("diagnostics lack %q", want)
		}
	}
	if !strings.Contains(nat, "nat_guests") || !strings.Contains(nat, "172.16.0.") {
		t.Errorf("nat section lacks the guest set and address:\n%s", nat)
	}
	if !strings.Contains(log, "cleanup: deleting verify-") {
		t.Errorf("no cleanup line")
	}
	assertNothingLeft(t, e)
}

// fakeGuestSSH answers verify.sh's checks like a healthy guest would, so
// the passing path (checks, stop, delete, leftovers) runs too.
const fakeGuestSSH = `#!/bin/sh
for last; do :; done
case "$last" in
  true) exit 0 ;;
  *"getent passwd root"*) echo /bin/bash ;;
  *"stat -c %d /root"*) exit 0 ;;
  *"df -h /root"*) echo "/dev/vdb 60M 24K 56M 1% /root" ;;
  *deb.debian.org*) exit 0 ;;
  *) echo "fake guest: unexpected command: $last" >&2; exit 1 ;;
esac
`

func TestVerifyPassesWithAnsweringGuest(t *testing.T) {
	e := newVerifyEnv(t)
	bin := filepath.Join(e.dir, "fakebin")
	os.MkdirAll(bin, 0o755)
	if err := os.WriteFile(filepath.Join(bin, "ssh"), []byte(fakeGuestSSH), 0o755); err != nil {
		t.Fatal(err)
	}
	log, code, _ := runVerify(t, e, e.bins.dir+":"+bin)
	if code != 0 || !strings.Contains(log, "PASS: verify-") {
		t.Fatalf("verify.sh exited %d without PASS", code)
	}
	for _, want := range []string{"root's shell is /bin/bash", "/root is the work disk (/dev/vdb", "outbound network works"} {
		if !strings.Contains(log, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if strings.Contains(log, "=== diagnostics") || strings.Contains(log, "cleanup: deleting") {
		t.Errorf("diagnostics or a cleanup delete on the passing path")
	}
	assertNothingLeft(t, e)
}
