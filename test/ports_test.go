//go:build system

package test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
	"time"

	"banger/internal/api"
)

// The daemon's forwards (vm ports, --publish, auto_forward) against fcfake,
// whose guest's "127.0.0.1" is 127.77.<cid> on the namespace's loopback
// (see test/fcfake/main.go): a test starts a guest service by listening
// there, and the daemon's forwards listen on 127.0.0.1 in the namespace.
// guestAddr, inNetns and dialNetns are in forward_test.go.

// pubListen listens on addr in the namespace and serves "NAME:" + each
// line back on every connection, until the test ends or it is closed.
func (e *env) pubListen(addr, name string) net.Listener {
	e.t.Helper()
	var l net.Listener
	if err := e.inNetns(func() (err error) { l, err = net.Listen("tcp4", addr); return err }); err != nil {
		e.t.Fatalf("listening on %s in the netns: %v", addr, err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				sc := bufio.NewScanner(c)
				sc.Buffer(make([]byte, 4<<20), 4<<20)
				for sc.Scan() {
					if _, err := fmt.Fprintf(c, "%s:%s\n", name, sc.Text()); err != nil {
						return
					}
				}
			}()
		}
	}()
	e.t.Cleanup(func() { l.Close() })
	return l
}

// pubAsk sends line through addr and returns the answer line.
func (e *env) pubAsk(addr, line string) (string, error) {
	c, err := e.dialNetns(addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return "", err
	}
	r := bufio.NewReaderSize(c, 4<<20)
	ans, err := r.ReadString('\n')
	return strings.TrimSuffix(ans, "\n"), err
}

// pubListening reports whether anything but a fake guest (127.77.x.y)
// listens on TCP port in the namespace, from /proc/net/tcp and tcp6.
func (e *env) pubListening(port int) bool {
	e.t.Helper()
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		out := run(e.t, "ip", "netns", "exec", e.ns, "cat", f)
		for _, line := range strings.Split(out, "\n")[1:] {
			fs := strings.Fields(line)
			if len(fs) < 4 || fs[3] != "0A" || !strings.HasSuffix(fs[1], fmt.Sprintf(":%04X", port)) {
				continue
			}
			// IPv4 addresses are printed as a little-endian word: 127.77.x.y ends in 4D7F.
			if addr := strings.TrimSuffix(fs[1], fmt.Sprintf(":%04X", port)); len(addr) == 8 && strings.HasSuffix(addr, "4D7F") {
				continue
			}
			return true
		}
	}
	return false
}

func (e *env) pubPorts(vm string) api.VMPorts {
	e.t.Helper()
	var p api.VMPorts
	if err := json.Unmarshal([]byte(e.ok("vm", "ports", vm, "--json")), &p); err != nil {
		e.t.Fatalf("vm ports --json: %v", err)
	}
	return p
}

// pubWait polls cond every 100 ms for up to 20 s and returns how long it took.
func (e *env) pubWait(what string, cond func() bool) time.Duration {
	e.t.Helper()
	t0 := time.Now()
	for deadline := t0.Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if cond() {
			return time.Since(t0)
		}
	}
	e.t.Fatalf("%s: not within 20s\ndaemon log:\n%s", what, e.daemonLogTail())
	return 0
}

func findForward(p api.VMPorts, kind string, guest int) (api.Forward, bool) {
	for _, f := range p.Forwards {
		if f.Kind == kind && f.GuestPort == guest {
			return f, true
		}
	}
	return api.Forward{}, false
}

// pubPort picks a random high port for this test (its own namespace).
func pubPort() int { return 20000 + rand.IntN(20000) }

// TestAutoForward: a guest listener gets a forward on the same host port
// within a poll or two (the latency is logged), its connections reach the
// guest, and it closes with the listener; a taken host port and a
// privileged guest port get another port, reported by `vm ports --json`;
// every forward ends when the VM stops and nothing listens after delete.
func TestAutoForward(t *testing.T) {
	e := newEnv(t, "")
	e.registerImage()
	e.ok("vm", "create", "dev")
	guest := guestAddr(e.vm("dev").CID)
	port := pubPort()
	host := fmt.Sprintf("127.0.0.1:%d", port)

	svc := e.pubListen(fmt.Sprintf("%s:%d", guest, port), "svc")
	took := e.pubWait("auto forward of "+host, func() bool {
		ans, err := e.pubAsk(host, "hello")
		return err == nil && ans == "svc:hello"
	})
	t.Logf("auto forward answered %s after the guest listener opened (poll interval 1s)", took.Round(time.Millisecond))
	p := e.pubPorts("dev")
	if f, ok := findForward(p, api.ForwardAuto, port); !ok || f.HostPort != port || f.HostAddr != "127.0.0.1" || f.Requested != 0 {
		t.Fatalf("vm ports: %+v; want an auto forward 127.0.0.1:%d", p, port)
	}
	if !strings.Contains(e.ok("vm", "show", "dev"), fmt.Sprintf("%s -> dev:%d (auto)", host, port)) {
		t.Errorf("vm show does not list the forward")
	}
	if out := e.ok("vm", "ports", "dev"); !strings.Contains(out, host) || !strings.Contains(out, "auto") {
		t.Errorf("vm ports table:\n%s", out)
	}

	svc.Close()
	took = e.pubWait("auto forward closing with its listener", func() bool { return !e.pubListening(port) })
	t.Logf("auto forward closed %s after the guest listener did", took.Round(time.Millisecond))
	if _, ok := findForward(e.pubPorts("dev"), api.ForwardAuto, port); ok {
		t.Fatalf("vm ports still lists the closed forward")
	}

	// A host port another program holds: another port, reported.
	taken := pubPort()
	e.pubListen(fmt.Sprintf("127.0.0.1:%d", taken), "host")
	e.pubListen(fmt.Sprintf("%s:%d", guest, taken), "svc2")
	var f api.Forward
	e.pubWait("forward for a taken host port", func() bool {
		var ok bool
		f, ok = findForward(e.pubPorts("dev"), api.ForwardAuto, taken)
		return ok
	})
	if f.HostPort == taken || f.HostPort < 1024 || f.Requested != taken || !strings.Contains(f.Note, fmt.Sprintf("host port %d is taken", taken)) {
		t.Fatalf("forward for taken port %d: %+v; want another unprivileged port, requested_port and a note", taken, f)
	}
	if ans, err := e.pubAsk(fmt.Sprintf("127.0.0.1:%d", f.HostPort), "x"); err != nil || ans != "svc2:x" {
		t.Fatalf("through the chosen port: %q, %v", ans, err)
	}
	if ans, _ := e.pubAsk(fmt.Sprintf("127.0.0.1:%d", taken), "x"); ans != "host:x" {
		t.Fatalf("the other program's port answers %q; it must stay its own", ans)
	}

	// A privileged guest port is never forwarded from a privileged host port.
	e.pubListen(guest+":80", "web")
	e.pubWait("forward for guest port 80", func() bool {
		var ok bool
		f, ok = findForward(e.pubPorts("dev"), api.ForwardAuto, 80)
		return ok
	})
	if f.HostPort < 1024 || f.Requested != 80 || !strings.Contains(f.Note, "privileged") {
		t.Fatalf("forward for guest port 80: %+v", f)
	}
	held := []int{f.HostPort}
	if f, ok := findForward(e.pubPorts("dev"), api.ForwardAuto, taken); ok {
		held = append(held, f.HostPort)
	}

	e.ok("vm", "stop", "dev")
	for _, p := range held {
		if e.pubListening(p) {
			t.Errorf("port %d still listens after vm stop", p)
		}
	}
	if p := e.pubPorts("dev"); len(p.Forwards) != 0 || p.Note == "" {
		t.Errorf("vm ports of a stopped vm: %+v", p)
	}
	e.ok("vm", "start", "dev")
	e.pubWait("auto forward after restart", func() bool {
		_, ok := findForward(e.pubPorts("dev"), api.ForwardAuto, 80)
		return ok
	})
	e.ok("vm", "delete", "dev")
	for _, p := range append(held, port) {
		if e.pubListening(p) {
			t.Errorf("port %d listens after vm delete", p)
		}
	}
	if _, err := e.dialNetns(fmt.Sprintf("127.0.0.1:%d", held[0])); err == nil {
		t.Errorf("a deleted vm's forward still accepts connections")
	}

	// An agent from before ports: listed as such, nothing forwarded.
	e.ok("daemon", "stop")
	e.extra = []string{"FCFAKE_AGENT_LEGACY=1"}
	e.ok("vm", "create", "old")
	_, errOut, code := e.banger("vm", "ports", "old")
	if code != 0 || !strings.Contains(errOut, "older than this banger") || !strings.Contains(errOut, "banger image build") {
		t.Errorf("vm ports with a legacy agent: exit %d, stderr %q; want 0 and the rebuild hint", code, errOut)
	}
	if p := e.pubPorts("old"); len(p.Listeners) != 0 || len(p.Forwards) != 0 || !strings.Contains(p.Note, "older than this banger") {
		t.Errorf("vm ports --json with a legacy agent: %+v", p)
	}
	e.ok("vm", "delete", "old")
	e.assertClean()
}

// TestPublish: --publish at create holds the port while the VM runs and
// carries data both ways; bad specs and a port another VM publishes are
// refused with nothing changed; vm set --publish/--unpublish act on a
// running VM; stop closes and start reopens; nothing listens after delete;
// auto_forward = false opens no automatic forward.
func TestPublish(t *testing.T) {
	e := newEnv(t, "auto_forward = false\n")
	e.registerImage()
	a, b, c := pubPort(), pubPort(), pubPort()
	for b == a {
		b = pubPort()
	}
	for c == a || c == b {
		c = pubPort()
	}
	out := e.ok("vm", "create", "web", "--publish", fmt.Sprintf("127.0.0.1:%d:9090", a), "-p", fmt.Sprintf("%d:9091", b))
	for _, want := range []string{fmt.Sprintf("forward 127.0.0.1:%d -> web:9090 (published)", a), fmt.Sprintf("forward 127.0.0.1:%d -> web:9091 (published)", b)} {
		if !strings.Contains(out, want) {
			t.Errorf("vm create output lacks %q:\n%s", want, out)
		}
	}
	guest := guestAddr(e.vm("web").CID)
	e.pubListen(guest+":9090", "svc")
	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB each way
	if ans, err := e.pubAsk(fmt.Sprintf("127.0.0.1:%d", a), big); err != nil || ans != "svc:"+big {
		t.Fatalf("through the published port: %d bytes, %v; want the 1 MiB line echoed", len(ans), err)
	}

	// Refusals: one line, nothing created or changed.
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"vm", "create", "other", "--publish", "9090"}, 2, "--publish \"9090\""},
		{[]string{"vm", "create", "other", "--publish", fmt.Sprintf("%d:1", a)}, 1, fmt.Sprintf("127.0.0.1:%d is already published by vm web", a)},
		{[]string{"vm", "set", "web", "--unpublish", "1"}, 1, "host port 1 is not published by vm web"}, // a batch command: daemon refusals exit 1
		{[]string{"vm", "set", "web", "--publish", "1:99999"}, 2, "guest port"},
	} {
		_, errOut, code := e.banger(tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.want) || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
			t.Errorf("banger %s: exit %d, stderr %q; want %d and one line with %q", strings.Join(tc.args, " "), code, errOut, tc.code, tc.want)
		}
	}
	for _, v := range e.vms() {
		if v.Name == "other" {
			t.Fatalf("a refused create left vm other")
		}
	}
	e.ok("vm", "create", "other", "--no-start")
	if _, errOut, code := e.banger("vm", "set", "other", "--publish", fmt.Sprintf("%d:1", b)); code != 1 || !strings.Contains(errOut, "already published by vm web") {
		t.Errorf("set --publish of web's port on other: exit %d, %q", code, errOut)
	}

	// Live changes on the running VM.
	e.ok("vm", "set", "web", "--unpublish", fmt.Sprint(b), "--publish", fmt.Sprintf("%d:9090", c))
	if e.pubListening(b) {
		t.Errorf("unpublished port %d still listens", b)
	}
	if ans, err := e.pubAsk(fmt.Sprintf("127.0.0.1:%d", c), "new"); err != nil || ans != "svc:new" {
		t.Errorf("port published by vm set: %q, %v", ans, err)
	}
	p := e.pubPorts("web")
	if len(p.Forwards) != 2 || p.AutoForward {
		t.Errorf("vm ports: %+v; want the two published forwards, auto_forward false", p)
	}

	// An open forwarded connection counts as use (auto_stop_stale_after).
	before := e.vm("web").LastUsedAt
	conn, err := e.dialNetns(fmt.Sprintf("127.0.0.1:%d", a))
	if err != nil {
		t.Fatal(err)
	}
	e.pubWait("an open forwarded connection recorded as use", func() bool {
		return e.vm("web").LastUsedAt.After(before)
	})
	conn.Close()

	// auto_forward = false: a guest listener is listed, never forwarded.
	other := pubPort()
	e.pubListen(fmt.Sprintf("%s:%d", guest, other), "x")
	e.pubWait("the agent listing the new listener", func() bool {
		for _, l := range e.pubPorts("web").Listeners {
			if l.Port == other {
				return true
			}
		}
		return false
	})
	time.Sleep(3 * time.Second) // three polls of the forward manager
	if _, ok := findForward(e.pubPorts("web"), api.ForwardAuto, other); ok || e.pubListening(other) {
		t.Errorf("auto_forward = false forwarded guest port %d", other)
	}

	e.ok("vm", "stop", "web")
	for _, port := range []int{a, c} {
		if e.pubListening(port) {
			t.Errorf("published port %d listens after vm stop", port)
		}
	}
	if p := e.pubPorts("web"); len(p.Forwards) != 2 || p.Forwards[0].Error == "" {
		t.Errorf("vm ports of the stopped vm: %+v; want both published ports, not held", p)
	}
	e.ok("vm", "start", "web")
	if ans, err := e.pubAsk(fmt.Sprintf("127.0.0.1:%d", a), "again"); err != nil || ans != "svc:again" {
		t.Errorf("after restart: %q, %v", ans, err)
	}
	// The daemon's forwards go with it (the VM keeps running) and come
	// back with the next daemon.
	e.ok("daemon", "stop")
	e.pubWait("forwards closing with the daemon", func() bool { return !e.pubListening(a) && !e.pubListening(c) })
	e.ok("vm", "list")
	e.pubWait("published port held by the next daemon", func() bool {
		ans, err := e.pubAsk(fmt.Sprintf("127.0.0.1:%d", c), "back")
		return err == nil && ans == "svc:back"
	})
	e.ok("vm", "delete", "web")
	for _, port := range []int{a, b, c} {
		if e.pubListening(port) {
			t.Errorf("port %d listens after vm delete", port)
		}
	}
	// Its ports are free for another VM now.
	e.ok("vm", "set", "other", "--publish", fmt.Sprintf("%d:1", a))
	if !bytes.Contains([]byte(e.ok("vm", "ports", "other")), []byte(fmt.Sprint(a))) {
		t.Errorf("vm ports other does not list the port it publishes")
	}
	e.ok("vm", "delete", "other")
	e.assertClean()
}

// TestForwardWakesSuspendedVM: a suspended VM keeps its published and
// automatic forwards, and a connection to one restores it (the same guest:
// same boot id) and is carried through; a paused VM keeps them too; vm stop
// of the suspended VM closes them.
func TestForwardWakesSuspendedVM(t *testing.T) {
	e := newEnv(t, "")
	e.registerImage()
	pub := pubPort()
	e.ok("vm", "create", "web", "--publish", fmt.Sprintf("%d:9090", pub))
	v := e.vm("web")
	guest := guestAddr(v.CID)
	e.pubListen(guest+":9090", "svc")
	autoPort := pubPort()
	for autoPort == pub {
		autoPort = pubPort()
	}
	e.pubListen(fmt.Sprintf("%s:%d", guest, autoPort), "auto")
	pubAddr, autoAddr := fmt.Sprintf("127.0.0.1:%d", pub), fmt.Sprintf("127.0.0.1:%d", autoPort)
	e.pubWait("the automatic forward", func() bool { return e.pubListening(autoPort) })
	boot := e.guestHealth("web").BootID

	e.ok("vm", "pause", "web")
	time.Sleep(2 * time.Second) // a poll or two
	if !e.pubListening(pub) || !e.pubListening(autoPort) {
		t.Fatalf("a paused vm lost its forwards (published %v, auto %v)", e.pubListening(pub), e.pubListening(autoPort))
	}
	e.ok("vm", "resume", "web")

	for _, tt := range []struct{ addr, name string }{{pubAddr, "svc"}, {autoAddr, "auto"}} {
		e.ok("vm", "suspend", "web")
		if s := e.vm("web").State; s != "suspended" {
			t.Fatalf("state %s after vm suspend", s)
		}
		time.Sleep(2 * time.Second) // a poll or two must not close them
		if !e.pubListening(pub) || !e.pubListening(autoPort) {
			t.Fatalf("a suspended vm lost its forwards (published %v, auto %v)", e.pubListening(pub), e.pubListening(autoPort))
		}
		t0 := time.Now()
		ans, err := e.pubAsk(tt.addr, "hello")
		if err != nil || ans != tt.name+":hello" {
			t.Fatalf("through %s of the suspended vm: %q, %v", tt.addr, ans, err)
		}
		t.Logf("a connection to %s woke the vm and was answered in %s", tt.addr, time.Since(t0).Round(time.Millisecond))
		if s := e.vm("web").State; s != "running" {
			t.Fatalf("state %s after a connection to a forward", s)
		}
		if b := e.guestHealth("web").BootID; b != boot {
			t.Fatalf("boot id %s after the wake, want %s: not the same guest", b, boot)
		}
	}

	e.ok("vm", "suspend", "web")
	e.ok("vm", "stop", "web")
	if e.pubListening(pub) || e.pubListening(autoPort) {
		t.Errorf("forwards of a suspended vm still listen after vm stop")
	}
	e.ok("vm", "delete", "web")
	e.assertClean()
}
