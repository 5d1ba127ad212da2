//go:build system

package test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/api"
)

// TestBalloon: with balloon = "auto" (the default) and fcfake reporting
// Firecracker 1.16.1, a VM boots with the balloon and free page reporting,
// installed before InstanceStart, and `vm stats` shows its statistics;
// balloon = "off" installs none.
func TestBalloon(t *testing.T) {
	e := newEnv(t, "")
	e.registerImage()
	e.ok("vm", "create", "mem")

	var order []string
	var body string
	for _, ev := range e.records() {
		if ev.Event != "request" {
			continue
		}
		switch {
		case ev.Method == "PUT" && ev.Path == "/balloon":
			order = append(order, "balloon")
			body = string(ev.Body)
		case ev.Method == "PUT" && ev.Path == "/actions" && strings.Contains(string(ev.Body), "InstanceStart"):
			order = append(order, "start")
		}
	}
	if strings.Join(order, " ") != "balloon start" {
		t.Fatalf("PUT /balloon and InstanceStart came as %v, want the balloon first", order)
	}
	var b struct {
		AmountMib         *int  `json:"amount_mib"`
		DeflateOnOOM      bool  `json:"deflate_on_oom"`
		StatsPollingS     int   `json:"stats_polling_interval_s"`
		FreePageReporting *bool `json:"free_page_reporting"`
	}
	if err := json.Unmarshal([]byte(body), &b); err != nil {
		t.Fatalf("balloon body %s: %v", body, err)
	}
	if b.AmountMib == nil || *b.AmountMib != 0 || !b.DeflateOnOOM || b.StatsPollingS < 1 || b.FreePageReporting == nil || !*b.FreePageReporting {
		t.Fatalf("balloon body %s: want amount 0, deflate_on_oom, statistics on, free_page_reporting", body)
	}

	var st api.StatsList
	if err := json.Unmarshal([]byte(e.ok("vm", "stats", "mem", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Stats) != 1 || st.Stats[0].Balloon == nil {
		t.Fatalf("vm stats --json: %+v, want balloon statistics", st)
	}
	bs := st.Stats[0].Balloon
	// default_memory_mib is 256 in the harness.
	if bs.TotalBytes <= 0 || bs.TotalBytes > 256<<20 || bs.AvailableBytes <= 0 || bs.AvailableBytes > bs.TotalBytes || bs.ActualMiB != 0 {
		t.Fatalf("balloon statistics implausible: %+v", bs)
	}
	out := e.ok("vm", "stats", "mem")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "GUEST AVAIL") || !strings.Contains(lines[0], "BALLOON") ||
		!strings.Contains(lines[1], "MiB /") || !strings.HasSuffix(strings.TrimSpace(lines[1]), "0 MiB") {
		t.Fatalf("vm stats table:\n%s", out)
	}

	// A stopped VM has no statistics.
	e.ok("vm", "stop", "mem")
	st = api.StatsList{}
	if err := json.Unmarshal([]byte(e.ok("vm", "stats", "mem", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if st.Stats[0].Balloon != nil {
		t.Fatalf("stopped vm has balloon statistics %+v", st.Stats[0].Balloon)
	}
	e.ok("vm", "delete", "mem")
	e.assertClean()
}

// TestBalloonOff: balloon = "off" boots without one and vm stats says "-".
func TestBalloonOff(t *testing.T) {
	e := newEnv(t, "balloon = \"off\"\n")
	e.registerImage()
	e.ok("vm", "create", "nob")
	for _, ev := range e.records() {
		if ev.Event == "request" && strings.HasPrefix(ev.Path, "/balloon") {
			t.Fatalf("balloon = off, but fcfake saw %s %s", ev.Method, ev.Path)
		}
	}
	var st api.StatsList
	if err := json.Unmarshal([]byte(e.ok("vm", "stats", "nob", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Stats) != 1 || st.Stats[0].Balloon != nil || st.Stats[0].PID == 0 {
		t.Fatalf("vm stats --json: %+v, want a running vm without balloon statistics", st)
	}
	out := e.ok("vm", "stats", "nob")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if f := strings.Fields(lines[len(lines)-1]); len(lines) != 2 || len(f) < 2 || f[len(f)-1] != "-" || f[len(f)-2] != "-" {
		t.Fatalf("vm stats table, want - - for GUEST AVAIL and BALLOON:\n%s", out)
	}
	e.ok("vm", "delete", "nob")
	e.assertClean()
}

// waitState polls vm show until the VM is in state, for up to 30 s (the
// idle loop runs every 1.5 s with idle_after = 2s; CI is slow).
func (e *env) waitState(name, state string) api.VM {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		v := e.vm(name)
		if v.State == state {
			return v
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("vm %s still %s after 30s, want %s\ndaemon log:\n%s", name, v.State, state, e.daemonLogTail())
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// digWait asks the daemon's DNS server (inside the namespace) for name's A
// record, waiting up to 10 s for the answer, and returns the addresses and
// how long the answer took.
func (e *env) digWait(name string) ([]string, time.Duration) {
	e.t.Helper()
	t0 := time.Now()
	out, err := exec.Command("ip", "netns", "exec", e.ns, "dig", "+tries=1", "+time=10", "+norecurse", "+short", "@127.0.0.1", "-p", "42069", name, "A").CombinedOutput()
	took := time.Since(t0)
	if err != nil {
		e.t.Fatalf("dig %s: %v\n%s", name, err, out)
	}
	return strings.Fields(string(out)), took
}

// daemonLogCount counts daemon log lines containing s.
func (e *env) daemonLogCount(s string) int {
	b, _ := os.ReadFile(filepath.Join(e.state, "bangerd.log"))
	return strings.Count(string(b), s)
}

// TestIdleSuspendAndWake: with idle_after = "2s" (idle_action defaults to
// suspend) and the stand-in agent reporting no SSH logins, a VM is
// suspended once idle, its name stays resolvable, and it is woken by
// `vm exec`, by a DNS query for NAME.vm (answered with its address once
// it runs again) and by `vm ssh` (stand-in ssh), each time going back to
// sleep when left idle.
func TestIdleSuspendAndWake(t *testing.T) {
	if _, err := exec.LookPath("dig"); err != nil {
		t.Skip("needs dig (Debian package bind9-dnsutils)")
	}
	s := newSSHEnv(t, "8s")
	cfgPath := filepath.Join(s.dir, "config.toml")
	f, err := os.OpenFile(cfgPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(f, `idle_after = "2s"`)
	f.Close()
	s.extra = append(s.extra, "FCFAKE_SSH_LOGINS=0")
	s.base = append(s.base, "FCFAKE_SSH_LOGINS=0")
	s.registerImage()
	s.ok("vm", "create", "idle")
	ip := s.vm("idle").IP

	// Idle: suspended, with the reason.
	v := s.waitState("idle", api.StateSuspended)
	if !strings.Contains(v.StopReason, "idle_after") {
		t.Errorf("stop reason %q, want it to name idle_after", v.StopReason)
	}

	// vm exec wakes it and runs the command.
	out, errOut, code := s.bangerIO(nil, "vm", "exec", "idle", "--", "sh", "-c", "echo awake")
	if code != 0 || strings.TrimSpace(string(out)) != "awake" {
		t.Fatalf("vm exec on a suspended vm: exit %d stdout %q stderr %q\n%s", code, out, errOut, s.daemonLogTail())
	}
	if n := s.daemonLogCount("woke vm for use"); n != 1 {
		t.Errorf("%d wakes logged after vm exec, want 1", n)
	}

	// Asleep again; a DNS query wakes it and answers its address.
	s.waitState("idle", api.StateSuspended)
	addrs, took := s.digWait("idle.vm")
	if len(addrs) != 1 || addrs[0] != ip {
		t.Fatalf("dig idle.vm while suspended = %v, want [%s]\n%s", addrs, ip, s.daemonLogTail())
	}
	if n := s.daemonLogCount("woke vm for a dns query"); n != 1 {
		t.Fatalf("%d dns wakes logged, want 1\n%s", n, s.daemonLogTail())
	}
	t.Logf("dns answer for a suspended vm took %s (dig process included)", took.Round(time.Millisecond))

	// Asleep again; vm ssh wakes it, then runs ssh.
	s.waitState("idle", api.StateSuspended)
	_, errOut, code, runs := s.sshRun("0", "idle", "--", "true")
	if code != 0 || len(runs) != 1 || !strings.Contains(errOut, "woke idle (it was suspended)") {
		t.Fatalf("vm ssh on a suspended vm: exit %d, %d ssh runs, stderr %q\n%s", code, len(runs), errOut, s.daemonLogTail())
	}
	if last := runs[0][len(runs[0])-2]; last != "root@"+ip {
		t.Errorf("ssh destination %q, want root@%s (argv %v)", last, ip, runs[0])
	}

	// The numbers docs/design.md quotes: how long each wake took inside
	// the daemon.
	b, _ := os.ReadFile(filepath.Join(s.state, "bangerd.log"))
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, "woke vm for") || strings.Contains(line, "suspending idle vm") {
			t.Log(line)
		}
	}
	s.ok("vm", "delete", "idle")
	s.assertClean()
}

// TestBalloonOlderFirecracker: a Firecracker older than 1.14 (fcfake
// claiming 1.13.0, which then refuses free_page_reporting like the real
// one) gets no balloon under "auto", and under "on" one without free page
// reporting whose statistics vm stats still shows.
func TestBalloonOlderFirecracker(t *testing.T) {
	e := newEnv(t, "")
	e.extra = []string{"FCFAKE_VERSION=1.13.0"}
	e.registerImage()
	e.ok("vm", "create", "old")
	for _, ev := range e.records() {
		if ev.Event == "request" && strings.HasPrefix(ev.Path, "/balloon") {
			t.Fatalf("balloon = auto on Firecracker 1.13: fcfake saw %s %s", ev.Method, ev.Path)
		}
	}
	e.ok("vm", "delete", "old")
	e.ok("daemon", "stop")

	f, err := os.OpenFile(filepath.Join(e.dir, "config.toml"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(f, `balloon = "on"`)
	f.Close()
	e.ok("vm", "create", "old2")
	var body string
	for _, ev := range e.records() {
		if ev.Event == "request" && ev.Method == "PUT" && ev.Path == "/balloon" {
			body = string(ev.Body)
		}
	}
	if body == "" || strings.Contains(body, "free_page") {
		t.Fatalf("balloon = on on Firecracker 1.13: PUT /balloon body %q, want one without free page fields", body)
	}
	var st api.StatsList
	if err := json.Unmarshal([]byte(e.ok("vm", "stats", "old2", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Stats) != 1 || st.Stats[0].Balloon == nil {
		t.Fatalf("vm stats --json: %+v, want balloon statistics", st)
	}
	e.ok("vm", "delete", "old2")
	e.assertClean()
}

// TestDNSWakesUserSuspendAndPause: without idle_after, a VM suspended or
// paused by hand keeps its name, and a DNS query brings it back running.
func TestDNSWakesUserSuspendAndPause(t *testing.T) {
	if _, err := exec.LookPath("dig"); err != nil {
		t.Skip("needs dig (Debian package bind9-dnsutils)")
	}
	e := newEnv(t, "")
	e.registerImage()
	e.ok("vm", "create", "w")
	ip := e.vm("w").IP
	for i, sleep := range []string{"suspend", "pause"} {
		e.ok("vm", sleep, "w")
		want := map[string]string{"suspend": api.StateSuspended, "pause": api.StatePaused}[sleep]
		if st := e.vm("w").State; st != want {
			t.Fatalf("after vm %s: %s", sleep, st)
		}
		addrs, took := e.digWait("w.vm")
		if len(addrs) != 1 || addrs[0] != ip {
			t.Fatalf("dig w.vm after vm %s = %v, want [%s]\n%s", sleep, addrs, ip, e.daemonLogTail())
		}
		e.waitState("w", api.StateRunning)
		if n := e.daemonLogCount("woke vm for a dns query"); n != i+1 {
			t.Fatalf("%d dns wakes logged after vm %s, want %d\n%s", n, sleep, i+1, e.daemonLogTail())
		}
		t.Logf("dns answer for a vm after vm %s took %s (dig process included)", sleep, took.Round(time.Millisecond))
	}
	e.ok("vm", "delete", "w")
	e.assertClean()
}
