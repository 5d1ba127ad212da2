//go:build system

package test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// standInSSH is an `ssh` for PATH that answers banger's verify commands
// with canned output. It records each call's arguments in calls; the word
// in mode ("pass" or "fail") picks the answers.
const standInSSH = `#!/bin/sh
dir=$(dirname "$0")
printf '%s\n' "$*" >>"$dir/calls"
for a; do cmd=$a; done
mode=$(cat "$dir/mode")
case "$cmd" in
"getent passwd root")
	if [ "$mode" = fail ]; then echo 'root:x:0:0:root:/root:/bin/sh'; else echo 'root:x:0:0:root:/root:/bin/bash'; fi ;;
"findmnt -n -o SOURCE /root")
	if [ "$mode" = fail ]; then exit 1; fi
	echo /dev/vdb ;;
*systemctl*)
	echo enabled ;;
*)
	echo "stand-in ssh: unexpected command: $cmd" >&2
	exit 127 ;;
esac
`

// withStandInSSH puts the stand-in ssh first on the env's PATH and returns
// its directory.
func withStandInSSH(t *testing.T, e *env) string {
	t.Helper()
	dir := filepath.Join(e.dir, "sshbin")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ssh"), []byte(standInSSH), 0o755); err != nil {
		t.Fatal(err)
	}
	e.extra = append(e.extra, "PATH="+dir+":"+os.Getenv("PATH"))
	return dir
}

func TestImageVerify(t *testing.T) {
	keyDir := t.TempDir()
	key := filepath.Join(keyDir, "id_ed25519")
	if err := os.WriteFile(key, []byte("stand-in key: the stand-in ssh never reads it\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, "ssh_key_path = \""+key+"\"\n")
	e.registerImage()
	sshDir := withStandInSSH(t, e)

	tests := []struct {
		mode    string
		code    int
		failing []string
	}{
		{"pass", 0, nil},
		{"fail", 1, []string{"root shell", "/root work disk"}},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			os.Remove(filepath.Join(sshDir, "calls"))
			if err := os.WriteFile(filepath.Join(sshDir, "mode"), []byte(tt.mode+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			out, errOut, code := e.banger("image", "verify", "debian")
			if code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s\ndaemon log:\n%s", code, tt.code, out, errOut, e.daemonLogTail())
			}
			rows := map[string]string{}
			for _, line := range strings.Split(out, "\n") {
				for _, check := range []string{"agent health", "ssh", "root shell", "/root work disk", "agent unit"} {
					if strings.HasPrefix(line, check+" ") {
						rows[check] = strings.Fields(strings.TrimPrefix(line, check))[0]
					}
				}
			}
			if len(rows) != 5 {
				t.Fatalf("want 5 check rows, got %v:\n%s", rows, out)
			}
			for check, res := range rows {
				want := "pass"
				for _, f := range tt.failing {
					if f == check {
						want = "FAIL"
					}
				}
				if res != want {
					t.Fatalf("%s: %s, want %s\n%s", check, res, want, out)
				}
			}
			// The throwaway VM is gone, whatever the outcome.
			if vms := e.vms(); len(vms) != 0 {
				t.Fatalf("VMs left after verify: %+v", vms)
			}
			if n := len(e.fcProcesses()); n != 0 {
				t.Fatalf("%d firecracker processes left", n)
			}
			calls, err := os.ReadFile(filepath.Join(sshDir, "calls"))
			if err != nil {
				t.Fatalf("ssh never ran: %v", err)
			}
			for _, w := range []string{"-i " + key, "IdentitiesOnly=yes", "UserKnownHostsFile=" + filepath.Join(e.state, "known_hosts"),
				"StrictHostKeyChecking=accept-new", "BatchMode=yes", "ConnectTimeout=", "root@172.16.0."} {
				if !strings.Contains(string(calls), w) {
					t.Fatalf("ssh calls lack %q:\n%s", w, calls)
				}
			}
		})
	}

	// An image that does not exist: a clear error, no VM left.
	_, errOut, code := e.banger("image", "verify", "nosuch")
	if code == 0 || !strings.Contains(errOut, "nosuch") {
		t.Fatalf("verify of a missing image: exit %d: %s", code, errOut)
	}
	if vms := e.vms(); len(vms) != 0 {
		t.Fatalf("VMs left: %+v", vms)
	}
}
