//go:build system

package test

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// guestAddr is the fake guest's own loopback address for a VM's CID (see
// test/fcfake/main.go): its agent dials it for /v1/connect and lists only
// listeners bound to it.
func guestAddr(cid uint32) string {
	return fmt.Sprintf("127.77.%d.%d", byte(cid>>8), byte(cid))
}

// inNetns runs fn on an OS thread inside the env's network namespace;
// sockets fn creates stay in the namespace.
func (e *env) inNetns(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("opening this thread's netns: %w", err)
			return
		}
		defer unix.Close(orig)
		ns, err := unix.Open("/run/netns/"+e.ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("opening netns %s: %w", e.ns, err)
			return
		}
		defer unix.Close(ns)
		if err := unix.Setns(ns, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("entering netns %s: %w", e.ns, err)
			return
		}
		ferr := fn()
		// A thread that cannot go back dies with this goroutine (no Unlock).
		if unix.Setns(orig, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- ferr
	}()
	return <-errc
}

// listenNetns listens on addr inside the env's namespace.
func (e *env) listenNetns(addr string) net.Listener {
	e.t.Helper()
	var l net.Listener
	if err := e.inNetns(func() (err error) { l, err = net.Listen("tcp4", addr); return err }); err != nil {
		e.t.Fatalf("listening on %s in the netns: %v", addr, err)
	}
	return l
}

// listenGuest starts a "guest service" of the VM with that CID on port (0:
// any), inside the namespace.
func (e *env) listenGuest(cid uint32, port int) net.Listener {
	return e.listenNetns(fmt.Sprintf("%s:%d", guestAddr(cid), port))
}

// dialNetns connects to addr from inside the env's namespace.
func (e *env) dialNetns(addr string) (net.Conn, error) {
	var c net.Conn
	err := e.inNetns(func() (err error) { c, err = net.DialTimeout("tcp", addr, 10*time.Second); return err })
	return c, err
}

// echoServe serves an echo service on l until it is closed: each
// connection is copied back and half-closed at the client's EOF.
func echoServe(t testing.TB, l net.Listener) {
	var wg sync.WaitGroup
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	t.Cleanup(func() { l.Close(); wg.Wait() })
}

// forwardProc is a running `banger vm forward`.
type forwardProc struct {
	cmd    *exec.Cmd
	addrs  []string // the host addresses it printed, in order
	stderr *syncBuffer
	done   chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var forwardLine = regexp.MustCompile(`^forwarding (\S+) → (\S+)$`)

// startForward runs `banger vm forward VM SPEC...` and waits for its
// "forwarding" lines.
func (e *env) startForward(vm string, specs ...string) *forwardProc {
	e.t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", e.ns, e.bins.banger, "vm", "forward", vm}, specs...)...)
	cmd.Env = e.environ()
	out, err := cmd.StdoutPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	p := &forwardProc{cmd: cmd, stderr: &syncBuffer{}, done: make(chan error, 1)}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-p.done
		}
	})
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		p.done <- cmd.Wait()
	}()
	deadline := time.After(30 * time.Second)
	for len(p.addrs) < len(specs) {
		select {
		case l, ok := <-lines:
			if !ok {
				e.t.Fatalf("vm forward %s ended before printing its forwards: stderr %q", strings.Join(specs, " "), p.stderr.String())
			}
			m := forwardLine.FindStringSubmatch(l)
			if m == nil {
				e.t.Fatalf("vm forward printed %q, want \"forwarding ADDR → VM:PORT\"", l)
			}
			p.addrs = append(p.addrs, m[1])
		case <-deadline:
			e.t.Fatalf("vm forward printed %d of %d forwards in 30s: stderr %q", len(p.addrs), len(specs), p.stderr.String())
		}
	}
	go func() {
		for range lines {
		}
	}()
	return p
}

// wait returns the exit code once the process ends (fails after 30s).
func (p *forwardProc) wait(t testing.TB) int {
	t.Helper()
	select {
	case err := <-p.done:
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		} else if err != nil {
			t.Fatalf("vm forward: %v", err)
		}
		return 0
	case <-time.After(30 * time.Second):
		t.Fatalf("vm forward did not end in 30s; stderr %q", p.stderr.String())
	}
	return -1
}

// echoOnce sends n random bytes over c, half-closes and compares what comes
// back byte for byte.
func echoOnce(c net.Conn, n int) error {
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	want := make([]byte, n)
	rand.Read(want)
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(want)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		werr <- err
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		return fmt.Errorf("reading the echo: %w", err)
	}
	if err := <-werr; err != nil {
		return fmt.Errorf("sending: %w", err)
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("sent %d bytes, the echo was %d bytes that differ", n, len(got))
	}
	return nil
}

// TestVMForward: `vm forward` through fcfake's vsock to a guest echo
// service: 100 concurrent connections each echoing 1 MiB byte for byte
// (half-close both ways), a guest port nothing listens on (the client's
// connection is closed, the forward logs why and goes on), Ctrl-C, the VM
// stopping under a running forward, and an agent too old for forwards.
func TestVMForward(t *testing.T) {
	e := newEnv(t, "")
	e.registerImage()
	e.ok("vm", "create", "dev")
	cid := e.vm("dev").CID
	svc := e.listenGuest(cid, 0)
	echoServe(t, svc)
	guestPort := svc.Addr().(*net.TCPAddr).Port
	closed := e.listenGuest(cid, 0)
	refusedPort := closed.Addr().(*net.TCPAddr).Port
	closed.Close()

	fw := e.startForward("dev", fmt.Sprintf("0:%d", guestPort), fmt.Sprintf("0:%d", refusedPort))
	for _, a := range fw.addrs {
		if !strings.HasPrefix(a, "127.0.0.1:") || strings.HasSuffix(a, ":0") {
			t.Fatalf("forward listens on %s, want 127.0.0.1 and a picked port", a)
		}
	}

	conns := make([]net.Conn, 100)
	for i := range conns {
		c, err := e.dialNetns(fw.addrs[0])
		if err != nil {
			t.Fatalf("connection %d to the forward: %v", i, err)
		}
		conns[i] = c
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(conns))
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- echoOnce(c, 1<<20)
		}()
	}
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if err != nil {
			failed++
			if failed <= 3 {
				t.Errorf("echo through the forward: %v", err)
			}
		}
	}
	if failed > 0 {
		t.Fatalf("%d of 100 echoes failed; forward stderr %q", failed, fw.stderr.String())
	}

	// A guest port nothing listens on: the connection is accepted, then
	// closed without data, and the forward says why.
	c, err := e.dialNetns(fw.addrs[1])
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	n, err := c.Read(make([]byte, 1))
	c.Close()
	if ne, ok := err.(net.Error); n != 0 || err == nil || (ok && ne.Timeout()) {
		t.Fatalf("a forward to a closed guest port: Read = %d, %v; want the connection closed", n, err)
	}
	want := fmt.Sprintf("nothing listens on port %d in the guest", refusedPort)
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(fw.stderr.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("forward stderr %q does not say %q", fw.stderr.String(), want)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := echoOnce(mustDial(t, e, fw.addrs[0]), 1000); err != nil {
		t.Fatalf("echo after a refused forward: %v", err)
	}

	// Ctrl-C ends it cleanly and frees the port.
	fw.cmd.Process.Signal(syscall.SIGINT)
	if code := fw.wait(t); code != 0 {
		t.Fatalf("vm forward after SIGINT: exit %d, stderr %q", code, fw.stderr.String())
	}
	if c, err := e.dialNetns(fw.addrs[0]); err == nil {
		c.Close()
		t.Fatal("the forward's port still accepts after SIGINT")
	}

	// A named host address and port; the VM stopping ends the forward.
	hostPort := freePort(t, e)
	fw = e.startForward("dev", fmt.Sprintf("127.0.0.1:%d:%d", hostPort, guestPort))
	if fw.addrs[0] != fmt.Sprintf("127.0.0.1:%d", hostPort) {
		t.Fatalf("forward listens on %s, want 127.0.0.1:%d", fw.addrs[0], hostPort)
	}
	if err := echoOnce(mustDial(t, e, fw.addrs[0]), 64<<10); err != nil {
		t.Fatal(err)
	}
	// The port is taken now: a second forward on it says so.
	_, errOut, code := e.banger("vm", "forward", "dev", fmt.Sprintf("%d:%d", hostPort, guestPort))
	if code != 1 || !strings.Contains(errOut, fmt.Sprintf("host port 127.0.0.1:%d is taken", hostPort)) {
		t.Fatalf("forward on a taken port: exit %d, stderr %q", code, errOut)
	}
	e.ok("vm", "stop", "dev")
	if code := fw.wait(t); code != 1 || !strings.Contains(fw.stderr.String(), "vm dev is") || !strings.Contains(fw.stderr.String(), "forwarding stopped") {
		t.Fatalf("vm forward after vm stop: exit %d, stderr %q; want 1 and \"vm dev is ...; forwarding stopped\"", code, fw.stderr.String())
	}
	_, errOut, code = e.banger("vm", "forward", "dev", "0:80")
	if code != 1 || !strings.Contains(errOut, "vm start dev") {
		t.Fatalf("forward to a stopped vm: exit %d, stderr %q; want 1 naming `banger vm start dev`", code, errOut)
	}

	// An agent from before forwards is refused with the rebuild hint.
	e.ok("daemon", "stop")
	e.extra = []string{"FCFAKE_AGENT_LEGACY=1"}
	e.ok("vm", "start", "dev")
	_, errOut, code = e.banger("vm", "forward", "dev", "0:80")
	if code != 1 || !strings.Contains(errOut, "older than this banger") || !strings.Contains(errOut, "banger image build") {
		t.Fatalf("forward with a legacy agent: exit %d, stderr %q; want 1 and the rebuild hint", code, errOut)
	}
	e.ok("vm", "delete", "dev")
	e.assertClean()
}

func mustDial(t testing.TB, e *env, addr string) net.Conn {
	t.Helper()
	c, err := e.dialNetns(addr)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// freePort picks a port free on 127.0.0.1 in the namespace.
func freePort(t testing.TB, e *env) int {
	l := e.listenNetns("127.0.0.1:0")
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
