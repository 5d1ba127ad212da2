//go:build system

package test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"

	"banger/internal/api"
)

// standInResolvectl records each call (arguments on one line) in
// $RESOLVECTL_LOG and fails when $RESOLVECTL_FAIL is set.
const standInResolvectl = `#!/bin/sh
printf '%s\n' "$*" >> "${RESOLVECTL_LOG:?}"
if [ -n "$RESOLVECTL_FAIL" ]; then
  echo "Failed to set DNS configuration: stand-in told to fail" >&2
  exit 1
fi
exit 0
`

// withStandInResolvectl puts a recording resolvectl first on the env's PATH
// (os/exec keeps the last of duplicate variables; TestDNSStandInPATHWins
// checks that premise) and returns the log path.
func withStandInResolvectl(t *testing.T, e *env) string {
	t.Helper()
	dir := filepath.Join(e.dir, "rcbin")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "resolvectl"), []byte(standInResolvectl), 0o755); err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(e.dir, "resolvectl.log")
	e.extra = append(e.extra, "PATH="+dir+":"+os.Getenv("PATH"), "RESOLVECTL_LOG="+log)
	return log
}

// resolvectlCalls returns the recorded calls and empties the log.
func resolvectlCalls(t *testing.T, log string) []string {
	t.Helper()
	b, err := os.ReadFile(log)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	os.Remove(log)
	var calls []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if l != "" {
			calls = append(calls, l)
		}
	}
	return calls
}

// TestDNSStandInPATHWins checks what the resolvectl tests rely on: of two
// PATH entries in cmd.Env, os/exec hands the child the last one.
func TestDNSStandInPATHWins(t *testing.T) {
	cmd := exec.Command("/bin/sh", "-c", `printf %s "$PATH"`)
	cmd.Env = []string{"PATH=/first", "HOME=/", "PATH=/second:/bin"}
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != "/second:/bin" {
		t.Fatalf("child PATH = %q, want the last entry /second:/bin", out)
	}
}

func (e *env) stopDaemonAndWait() {
	e.t.Helper()
	e.ok("daemon", "stop")
}

// TestDNSSetupResolved drives `banger dns setup` against a stand-in
// resolvectl: print mode, apply before and after the bridge exists, the
// daemon's re-apply when it re-creates the bridge, a failing re-apply that
// is only logged, and revert.
func TestDNSSetupResolved(t *testing.T) {
	e := newEnv(t, "")
	log := withStandInResolvectl(t, e) // before the first command starts the daemon
	e.registerImage()
	record := filepath.Join(e.state, "dns-setup.json")
	want := []string{"dns banger0 172.16.0.1:42069", "domain banger0 ~vm"}

	// Print mode changes nothing.
	out := e.ok("dns", "setup", "--resolver", "resolved")
	for _, s := range []string{"resolvectl dns banger0 172.16.0.1:42069", "resolvectl domain banger0 ~vm", "dig @127.0.0.1 -p 42069 NAME.vm", "Bridge banger0 does not exist yet"} {
		if !strings.Contains(out, s) {
			t.Fatalf("print mode lacks %q:\n%s", s, out)
		}
	}
	if c := resolvectlCalls(t, log); len(c) != 0 {
		t.Fatalf("print mode ran resolvectl: %v", c)
	}
	// Auto-detection: this host's /run/systemd/resolve decides.
	out = e.ok("dns", "setup")
	if _, err := os.Stat("/run/systemd/resolve"); err == nil {
		if !strings.Contains(out, "resolvectl dns banger0") {
			t.Fatalf("auto with resolved present:\n%s", out)
		}
	} else if !strings.Contains(out, "server=/vm/127.0.0.1#42069") || !strings.Contains(out, "/etc/dnsmasq.d/banger.conf") {
		t.Fatalf("auto without /run/systemd/resolve should print the dnsmasq line:\n%s", out)
	}
	if _, err := os.Stat(record); !os.IsNotExist(err) {
		t.Fatalf("print mode wrote %s: %v", record, err)
	}

	// Apply before the bridge exists: recorded, nothing run, the user told.
	out = e.ok("dns", "setup", "--apply", "--resolver", "resolved")
	if !strings.Contains(out, "does not exist yet") || !strings.Contains(out, "dig @127.0.0.1 -p 42069 NAME.vm") {
		t.Fatalf("apply without bridge:\n%s", out)
	}
	if c := resolvectlCalls(t, log); len(c) != 0 {
		t.Fatalf("apply without bridge ran resolvectl: %v", c)
	}
	var rec map[string]any
	b, err := os.ReadFile(record)
	if err != nil {
		t.Fatalf("apply left no record: %v", err)
	}
	if err := json.Unmarshal(b, &rec); err != nil || rec["resolver"] != "resolved" || rec["bridge"] != "banger0" || rec["addr"] != "172.16.0.1:42069" {
		t.Fatalf("record %s: %v", b, err)
	}

	// The daemon creates the bridge at the first start and applies it.
	e.ok("vm", "create", "alpha")
	if c := resolvectlCalls(t, log); !slices.Equal(c, want) {
		t.Fatalf("daemon's apply on bridge creation: calls %q, want %q\n%s", c, want, e.daemonLogTail())
	}
	// A second start does not re-create the bridge: no calls.
	e.ok("vm", "create", "beta")
	if c := resolvectlCalls(t, log); len(c) != 0 {
		t.Fatalf("calls without bridge creation: %v", c)
	}

	// Apply with the bridge present runs resolvectl through the seam.
	out = e.ok("dns", "setup", "--apply", "--resolver", "resolved")
	if !strings.Contains(out, "Applied: resolvectl dns banger0 172.16.0.1:42069") {
		t.Fatalf("apply with bridge:\n%s", out)
	}
	if c := resolvectlCalls(t, log); !slices.Equal(c, want) {
		t.Fatalf("apply with bridge: calls %q, want %q", c, want)
	}

	// Bridge gone, daemon restarted, VM start: the daemon re-creates the
	// bridge and re-applies.
	recreate := func() {
		t.Helper()
		e.ok("vm", "stop", "alpha", "beta")
		e.stopDaemonAndWait()
		run(t, "ip", "-n", e.ns, "link", "del", "banger0")
		e.ok("vm", "start", "alpha")
	}
	recreate()
	if c := resolvectlCalls(t, log); !slices.Equal(c, want) {
		t.Fatalf("re-apply after re-creating the bridge: calls %q, want %q\n%s", c, want, e.daemonLogTail())
	}
	if !strings.Contains(e.daemonLogTail(), "re-applied resolver settings") {
		t.Fatalf("daemon did not log the re-apply:\n%s", e.daemonLogTail())
	}

	// A failing resolvectl is logged; the VM still starts.
	e.extra = append(e.extra, "RESOLVECTL_FAIL=1")
	recreate()
	e.extra = e.extra[:len(e.extra)-1]
	if c := resolvectlCalls(t, log); len(c) != 1 || c[0] != want[0] {
		t.Fatalf("failing re-apply: calls %q", c)
	}
	if v := e.vm("alpha"); v.State != api.StateRunning {
		t.Fatalf("alpha after a failed re-apply: %s", v.State)
	}
	if tail := e.daemonLogTail(); !strings.Contains(tail, "resolver settings not re-applied") || !strings.Contains(tail, "stand-in told to fail") {
		t.Fatalf("failed re-apply not logged with its reason:\n%s", tail)
	}

	// Revert undoes it and removes the record.
	out = e.ok("dns", "setup", "--revert")
	if !strings.Contains(out, "Reverted: resolvectl revert banger0") {
		t.Fatalf("revert:\n%s", out)
	}
	if c := resolvectlCalls(t, log); !slices.Equal(c, []string{"revert banger0"}) {
		t.Fatalf("revert calls %q", c)
	}
	if _, err := os.Stat(record); !os.IsNotExist(err) {
		t.Fatalf("record left after revert: %v", err)
	}
	// After revert the daemon no longer re-applies.
	recreate()
	if c := resolvectlCalls(t, log); len(c) != 0 {
		t.Fatalf("re-applied after revert: %v", c)
	}
	e.ok("vm", "delete", "alpha", "beta")
	e.assertClean()
}

// dnsAnswer is what dig said.
type dnsAnswer struct {
	status    string
	aa        bool
	answers   []string // "TYPE RDATA"
	authority []string // "TYPE ..."
}

var digStatus = regexp.MustCompile(`status: ([A-Z]+)`)
var digFlags = regexp.MustCompile(`flags: ([a-z ]+);`)

// dig queries server (ADDR:PORT) from inside the namespace.
func (e *env) dig(server, name, qtype string, tcp bool) dnsAnswer {
	e.t.Helper()
	host, port, _ := strings.Cut(server, ":")
	args := []string{"netns", "exec", e.ns, "dig", "+tries=1", "+time=3", "+norecurse", "+noall", "+comments", "+answer", "+authority", "@" + host, "-p", port, name, qtype}
	if tcp {
		args = append(args, "+tcp")
	}
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		e.t.Fatalf("dig %s %s @%s (tcp %v): %v\n%s", name, qtype, server, tcp, err, out)
	}
	var a dnsAnswer
	s := string(out)
	m := digStatus.FindStringSubmatch(s)
	if m == nil {
		e.t.Fatalf("dig %s %s @%s: no status in\n%s", name, qtype, server, s)
	}
	a.status = m[1]
	if f := digFlags.FindStringSubmatch(s); f != nil {
		a.aa = slices.Contains(strings.Fields(f[1]), "aa")
	}
	section := ""
	for _, line := range strings.Split(s, "\n") {
		switch {
		case strings.HasPrefix(line, ";; ANSWER SECTION"):
			section = "answer"
		case strings.HasPrefix(line, ";; AUTHORITY SECTION"):
			section = "authority"
		case strings.HasPrefix(line, ";"), strings.TrimSpace(line) == "":
		default:
			f := strings.Fields(line)
			if len(f) < 5 {
				continue
			}
			rr := f[3] + " " + strings.Join(f[4:], " ")
			if section == "answer" {
				a.answers = append(a.answers, rr)
			} else if section == "authority" {
				a.authority = append(a.authority, rr)
			}
		}
	}
	return a
}

func reverseName(ip string) string {
	p := strings.Split(ip, ".")
	slices.Reverse(p)
	return strings.Join(p, ".") + ".in-addr.arpa."
}

func (e *env) daemonStatus() api.DaemonStatus {
	e.t.Helper()
	var st api.DaemonStatus
	out := e.ok("daemon", "status", "--json")
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		e.t.Fatalf("daemon status --json: %v: %s", err, out)
	}
	return st
}

// TestDNSEndToEnd queries the daemon's DNS server with dig on both
// listeners over UDP and TCP while VMs start, stop and go away, and after
// the daemon is killed and started again.
func TestDNSEndToEnd(t *testing.T) {
	if _, err := exec.LookPath("dig"); err != nil {
		t.Skip("needs dig (Debian package bind9-dnsutils)")
	}
	e := newEnv(t, "")
	e.registerImage()
	e.ok("vm", "create", "alpha")
	e.ok("vm", "create", "beta")
	e.ok("vm", "create", "gamma", "--no-start")
	alpha, beta := e.vm("alpha"), e.vm("beta")

	servers := []string{"127.0.0.1:42069", "172.16.0.1:42069"}
	st := e.daemonStatus()
	for _, s := range servers {
		if !slices.Contains(st.DNSListen, s) {
			t.Fatalf("daemon status dns_listen = %v, want %s", st.DNSListen, s)
		}
	}
	human := e.ok("daemon", "status")
	if !strings.Contains(human, "127.0.0.1:42069") || !strings.Contains(human, "172.16.0.1:42069") {
		t.Fatalf("daemon status does not show the listeners:\n%s", human)
	}

	expectA := func(server, name, ip string, tcp bool) {
		t.Helper()
		a := e.dig(server, name, "A", tcp)
		if ip == "" {
			if a.status != "NXDOMAIN" || len(a.answers) != 0 || len(a.authority) != 1 || !strings.HasPrefix(a.authority[0], "SOA ") {
				t.Fatalf("%s A @%s tcp=%v: want NXDOMAIN with the SOA, got %+v", name, server, tcp, a)
			}
			return
		}
		if a.status != "NOERROR" || !a.aa || !slices.Equal(a.answers, []string{"A " + ip}) {
			t.Fatalf("%s A @%s tcp=%v: want authoritative A %s, got %+v", name, server, tcp, ip, a)
		}
	}
	for _, s := range servers {
		for _, tcp := range []bool{false, true} {
			expectA(s, "alpha.vm", alpha.IP, tcp)
			expectA(s, "BETA.vm.", beta.IP, tcp)
			expectA(s, "nosuch.vm", "", tcp)
			expectA(s, "gamma.vm", "", tcp) // created, never started

			if a := e.dig(s, "alpha.vm", "AAAA", tcp); a.status != "NOERROR" || len(a.answers) != 0 || len(a.authority) != 1 || !strings.HasPrefix(a.authority[0], "SOA ") {
				t.Fatalf("AAAA alpha.vm @%s: want NODATA with the SOA, got %+v", s, a)
			}
			if a := e.dig(s, "example.com", "A", tcp); a.status != "REFUSED" || len(a.answers) != 0 {
				t.Fatalf("example.com @%s: want REFUSED, got %+v", s, a)
			}
			if a := e.dig(s, reverseName(alpha.IP), "PTR", tcp); a.status != "NOERROR" || !slices.Equal(a.answers, []string{"PTR alpha.vm."}) {
				t.Fatalf("PTR %s @%s: got %+v", alpha.IP, s, a)
			}
			if a := e.dig(s, reverseName("172.16.0.250"), "PTR", tcp); a.status != "NXDOMAIN" {
				t.Fatalf("PTR of an unused guest address @%s: want NXDOMAIN, got %+v", s, a)
			}
		}
	}

	// Records follow start, stop and delete.
	e.ok("vm", "start", "gamma")
	gamma := e.vm("gamma")
	e.ok("vm", "stop", "alpha")
	e.ok("vm", "delete", "beta")
	for _, s := range servers {
		expectA(s, "gamma.vm", gamma.IP, false)
		expectA(s, "alpha.vm", "", false)
		expectA(s, "beta.vm", "", true)
		if a := e.dig(s, reverseName(alpha.IP), "PTR", false); a.status != "NXDOMAIN" {
			t.Fatalf("PTR of stopped alpha @%s: %+v", s, a)
		}
	}
	e.ok("vm", "start", "alpha")
	expectA(servers[0], "alpha.vm", e.vm("alpha").IP, false)

	// kill -9 the daemon: nothing answers; the next daemon rebuilds the
	// records from the running VMs and serves on both addresses again.
	dpid := e.daemonPID()
	syscall.Kill(dpid, syscall.SIGKILL)
	waitGone(t, dpid)
	for _, s := range servers {
		out, err := exec.Command("ip", "netns", "exec", e.ns, "dig", "+tries=1", "+time=1", "@"+strings.Split(s, ":")[0], "-p", "42069", "gamma.vm").CombinedOutput()
		if err == nil && strings.Contains(string(out), "status: NOERROR") {
			t.Fatalf("a dead daemon still answered @%s:\n%s", s, out)
		}
	}
	e.ok("daemon", "start")
	for _, tcp := range []bool{false, true} {
		expectA(servers[0], "gamma.vm", gamma.IP, tcp)
		expectA(servers[0], "alpha.vm", e.vm("alpha").IP, tcp)
		expectA(servers[0], "beta.vm", "", tcp)
	}
	// The bridge already exists and VMs run on it: the new daemon must
	// serve on the bridge address too, without waiting for a VM start.
	if st = e.daemonStatus(); !slices.Contains(st.DNSListen, servers[1]) {
		t.Fatalf("after a restart with running VMs, dns_listen = %v: no listener on the bridge address %s", st.DNSListen, servers[1])
	}
	for _, s := range servers {
		for _, tcp := range []bool{false, true} {
			expectA(s, "gamma.vm", gamma.IP, tcp)
			expectA(s, "alpha.vm", e.vm("alpha").IP, tcp)
			expectA(s, "beta.vm", "", tcp)
		}
	}
	e.ok("vm", "delete", "alpha", "gamma")
	for _, s := range servers {
		expectA(s, "gamma.vm", "", false)
	}
	e.assertClean()
}
