//go:build system

package test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// fakeSSHScript stands in for ssh: it appends its argv (one argument per
// line, then "--end--") to $FAKESSH_LOG, says "fake ssh done" on stderr and
// exits with the Nth word of $FAKESSH_CODES on its Nth run (the last word
// repeats).
const fakeSSHScript = `#!/bin/sh
log=${FAKESSH_LOG:?}
n=$(( $(cat "$log.count" 2>/dev/null || echo 0) + 1 ))
echo "$n" > "$log.count"
{ for a in "$@"; do printf '%s\n' "$a"; done; echo "--end--"; } >> "$log"
code=0
i=0
for c in ${FAKESSH_CODES:-0}; do
  i=$((i + 1))
  code=$c
  [ "$i" -ge "$n" ] && break
done
echo "fake ssh done" >&2
exit "$code"
`

// writeSSHKey writes a fresh ed25519 private key in OpenSSH format.
func writeSSHKey(t *testing.T, path string) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "banger-test")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
}

// sshEnv is a harness env whose CLI finds the stand-in ssh first on PATH.
type sshEnv struct {
	*env
	key, log string
	base     []string // e.extra before per-call settings
}

func newSSHEnv(t *testing.T, bootDeadline string) *sshEnv {
	t.Helper()
	keyDir := t.TempDir()
	key := filepath.Join(keyDir, "id_ed25519")
	writeSSHKey(t, key)
	e := newEnv(t, fmt.Sprintf("ssh_key_path = %q\n", key))
	// A shorter boot window than the harness's, so the test can outlast it.
	cfgPath := filepath.Join(e.dir, "config.toml")
	cfg, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(cfg), "boot_deadline = \"8s\"") {
		t.Fatalf("harness config has no boot_deadline line to shorten:\n%s", cfg)
	}
	cfg = []byte(strings.Replace(string(cfg), "boot_deadline = \"8s\"", "boot_deadline = "+fmt.Sprintf("%q", bootDeadline), 1))
	if err := os.WriteFile(cfgPath, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(e.dir, "fakebin")
	os.MkdirAll(bin, 0o755)
	if err := os.WriteFile(filepath.Join(bin, "ssh"), []byte(fakeSSHScript), 0o755); err != nil {
		t.Fatal(err)
	}
	s := &sshEnv{env: e, key: key, log: filepath.Join(e.dir, "fakessh.log")}
	// os/exec keeps the last of duplicate variables, so this PATH wins
	// over the harness's own (checked by TestSSHStandInWins below).
	e.extra = append(e.extra, "PATH="+bin+":"+os.Getenv("PATH"), "FAKESSH_LOG="+s.log)
	s.base = append([]string(nil), e.extra...)
	return s
}

// sshRun runs `banger vm ssh ARGS` with the stand-in exiting with codes,
// and returns what the CLI said plus every argv the stand-in saw.
func (s *sshEnv) sshRun(codes string, args ...string) (stdout, stderr string, code int, runs [][]string) {
	s.t.Helper()
	os.Remove(s.log)
	os.Remove(s.log + ".count")
	s.extra = append(append([]string(nil), s.base...), "FAKESSH_CODES="+codes)
	defer func() { s.extra = s.base }()
	stdout, stderr, code = s.banger(append([]string{"vm", "ssh"}, args...)...)
	b, _ := os.ReadFile(s.log)
	var cur []string
	for _, line := range strings.Split(string(b), "\n") {
		if line == "--end--" {
			runs = append(runs, cur)
			cur = nil
			continue
		}
		if line != "" {
			cur = append(cur, line)
		}
	}
	return stdout, stderr, code, runs
}

// TestSSHStandInWins checks the premise of the ssh tests: the PATH added
// to e.extra is the one the CLI sees.
func TestSSHStandInWins(t *testing.T) {
	s := newSSHEnv(t, "8s")
	_, errOut, code := s.banger("vm", "ssh", "nosuchvm")
	if code != 1 || !strings.Contains(errOut, `no vm named "nosuchvm"`) {
		t.Fatalf("exit %d stderr %q (the stand-in ssh should have been found, then the vm not)", code, errOut)
	}
	s.extra = append(s.extra, "PATH="+t.TempDir())
	_, errOut, code = s.banger("vm", "ssh", "nosuchvm")
	if code != 1 || !strings.Contains(errOut, "ssh is not on PATH") {
		t.Fatalf("with no ssh on PATH: exit %d stderr %q", code, errOut)
	}
}

// TestSSH drives `banger vm ssh` against a running fcfake VM with a
// stand-in ssh: flags, known-hosts path, command passthrough, exit codes,
// the reminder, retries while booting, and --start.
func TestSSH(t *testing.T) {
	const boot = 5 * time.Second
	s := newSSHEnv(t, boot.String())
	s.registerImage()
	s.ok("vm", "create", "dev")
	vm := s.vm("dev")
	knownHosts := filepath.Join(s.state, "known_hosts")
	wantArgs := []string{
		"-i", s.key,
		"-o", "IdentitiesOnly=yes",
		"-o", "UserKnownHostsFile=" + knownHosts,
		"-o", "StrictHostKeyChecking=accept-new",
		"-o", "ConnectTimeout=5",
		"--", "root@" + vm.IP,
	}

	// Right after the start, connection failures (255) are retried.
	_, errOut, code, runs := s.sshRun("255 255 0", "dev", "--", "uname", "-a")
	if code != 0 || len(runs) != 3 || !strings.Contains(errOut, "still booting") {
		t.Fatalf("while booting: exit %d, %d runs, stderr %q", code, len(runs), errOut)
	}
	if got, want := strings.Join(runs[2], " "), strings.Join(append(wantArgs, "uname", "-a"), " "); got != want {
		t.Fatalf("argv\n got %s\nwant %s", got, want)
	}

	// Wait until the boot window is over: then 255 is final.
	if wait := time.Until(vm.StartedAt.Add(boot + 500*time.Millisecond)); wait > 0 {
		time.Sleep(wait)
	}
	_, _, code, runs = s.sshRun("255", "dev", "--", "true")
	if code != 255 || len(runs) != 1 {
		t.Fatalf("after boot: exit %d with %d runs, want 255 after one run", code, len(runs))
	}

	// An interactive login: exact argv, then one reminder line after ssh.
	before := time.Now()
	_, errOut, code, runs = s.sshRun("0", "dev")
	if code != 0 || len(runs) != 1 {
		t.Fatalf("login: exit %d runs %d stderr %q", code, len(runs), errOut)
	}
	if got, want := strings.Join(runs[0], " "), strings.Join(wantArgs, " "); got != want {
		t.Fatalf("argv\n got %s\nwant %s", got, want)
	}
	lines := strings.Split(strings.TrimSpace(errOut), "\n")
	last := lines[len(lines)-1]
	if strings.Count(errOut, "still running") != 1 || !strings.HasPrefix(last, "dev is still running (healthy, up ") ||
		!strings.HasSuffix(last, "); stop it with: banger vm stop dev") {
		t.Fatalf("reminder: stderr %q", errOut)
	}
	if i, j := strings.Index(errOut, "fake ssh done"), strings.Index(errOut, "still running"); i < 0 || i > j {
		t.Fatalf("the reminder must come after ssh returned: %q", errOut)
	}
	if lu := s.vm("dev").LastUsedAt; lu.Before(before.Add(-time.Second)) {
		t.Fatalf("last_used_at %v not touched (login at %v)", lu, before)
	}

	// The login's exit code is banger's; --no-reminder silences it.
	_, errOut, code, _ = s.sshRun("130", "dev", "--no-reminder")
	if code != 130 || strings.Contains(errOut, "still running") {
		t.Fatalf("--no-reminder: exit %d stderr %q", code, errOut)
	}

	// A one-shot command: passed through verbatim, exit code propagated,
	// no reminder.
	stdout, errOut, code, runs := s.sshRun("42", "dev", "--", "sh", "-c", "exit 42")
	if code != 42 || strings.Contains(errOut, "still running") || stdout != "" {
		t.Fatalf("one-shot: exit %d stdout %q stderr %q", code, stdout, errOut)
	}
	if got := runs[0][len(wantArgs):]; strings.Join(got, "|") != "sh|-c|exit 42" {
		t.Fatalf("command passed as %q", got)
	}

	// A stopped VM: a clear one-line error, ssh never runs.
	s.ok("vm", "stop", "dev")
	_, errOut, code, runs = s.sshRun("0", "dev")
	if code != 1 || len(runs) != 0 || !strings.Contains(errOut, "--start") || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
		t.Fatalf("stopped: exit %d runs %d stderr %q", code, len(runs), errOut)
	}

	// --start starts it, then retries while it boots.
	_, errOut, code, runs = s.sshRun("255 7", "--start", "dev", "--", "true")
	if code != 7 || len(runs) != 2 {
		t.Fatalf("--start: exit %d runs %d stderr %q", code, len(runs), errOut)
	}
	if st := s.vm("dev").State; st != "running" {
		t.Fatalf("after --start the vm is %s", st)
	}
	// The VM is deleted by the env's cleanup; the known_hosts path was
	// never created by the stand-in, which is fine.
}
