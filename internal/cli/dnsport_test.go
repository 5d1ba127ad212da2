//go:build !banger_front

package cli

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/api"
)

// TestDNSPortTaken: with another process on the DNS port, daemon status,
// doctor, dns setup and vm create all say so (before, only the log did).
func TestDNSPortTaken(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	addr := pc.LocalAddr().String()
	env := envWithConfig(t, "storage_driver = \"copy\"\ndefault_disk_size = \"64M\"\ndefault_work_disk_size = \"64M\"\n")
	env["BANGER_DNS_LISTEN_ADDR"] = addr
	startInProcessDaemon(t, env)
	problem := addr + " taken by another process; NAME.vm won't resolve through it — set dns_listen_addr to a free address"

	out, errOut, code := runCLI(t, env, "daemon", "status")
	if code != 0 || !strings.Contains(out, "dns ") || !strings.Contains(out, problem) {
		t.Fatalf("daemon status: exit %d\n%s%s\nwant a dns line %q", code, out, errOut, problem)
	}
	out, _, _ = runCLI(t, env, "daemon", "status", "--json")
	var st api.DaemonStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.DNSProblem != problem {
		t.Fatalf("status --json dns_problem %q (%v): %s", st.DNSProblem, err, out)
	}

	out, _, _ = runCLI(t, env, "doctor", "--json")
	var doc struct {
		Checks []struct{ Name, Status, Detail, Fix string }
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("doctor --json: %v: %s", err, out)
	}
	found := false
	for _, c := range doc.Checks {
		if c.Name == "dns_port" {
			found = true
			if c.Status != "fail" || !strings.Contains(c.Detail, "the running bangerd does not serve DNS: "+problem) || !strings.Contains(c.Fix, "dns_listen_addr") {
				t.Fatalf("doctor dns_port: %+v", c)
			}
		}
	}
	if !found {
		t.Fatalf("doctor has no dns_port check: %s", out)
	}
	out, _, _ = runCLI(t, env, "doctor")
	if !strings.Contains(out, "FAIL  dns_port") || !strings.Contains(out, problem) {
		t.Fatalf("doctor text:\n%s", out)
	}

	out, _, _ = runCLI(t, env, "dns", "setup")
	if !strings.Contains(out, "Warning: "+problem) || strings.Contains(out, "banger's DNS server answers") {
		t.Fatalf("dns setup:\n%s", out)
	}

	// vm create (without starting: no Firecracker needed) warns too.
	for _, tool := range []string{"mkfs.ext4", "debugfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("vm create part needs %s (e2fsprogs)", tool)
		}
	}
	img := filepath.Join(env["HOME"], "img.ext4")
	tree := filepath.Join(env["HOME"], "tree")
	os.MkdirAll(filepath.Join(tree, "root"), 0o700)
	os.MkdirAll(filepath.Join(tree, "sbin"), 0o755)
	os.WriteFile(filepath.Join(tree, "sbin", "init"), []byte("#!/bin/sh\n"), 0o755)
	if o, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", tree, img, "16M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs: %v: %s", err, o)
	}
	if out, errOut, code := runCLI(t, env, "image", "register", "debian", "--rootfs", img); code != 0 {
		t.Fatalf("register: exit %d: %s%s", code, out, errOut)
	}
	out, errOut, code = runCLI(t, env, "vm", "create", "dnsy", "--no-start")
	want := "banger: warning: dns: " + addr + " taken by another process; dnsy.vm won't resolve through it — set dns_listen_addr to a free address"
	if code != 0 || !strings.Contains(errOut, want) {
		t.Fatalf("vm create: exit %d\nstdout %s\nstderr %s\nwant %q", code, out, errOut, want)
	}
}
