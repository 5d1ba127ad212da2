package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// fcBin is the fake built once for all tests.
var fcBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fcfake-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Chmod(dir, 0o755) // tests run the fake as an unprivileged user too
	fcBin = filepath.Join(dir, "fcfake")
	build := exec.Command("go", "build", "-o", fcBin, ".")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building fcfake:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// shortDir is a temp dir with a short path (unix socket paths must fit in
// 107 bytes; t.TempDir() paths carry the test name).
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "fcf")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// syncBuffer collects a child's output safely.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// fc is one running fake.
type fc struct {
	t      *testing.T
	dir    string
	sock   string
	cmd    *exec.Cmd
	stdout syncBuffer
	stderr syncBuffer
	done   chan struct{}
	state  *os.ProcessState
	hc     *http.Client
}

type fcOpts struct {
	env    []string
	args   []string // replaces the default --api-sock/--id args when set
	prefix []string // run through this command (e.g. ip netns exec NS)
	cred   *syscall.Credential
	dir    string
	noWait bool // do not wait for the API socket
	extra  []string
}

// startFC starts the fake with --api-sock <dir>/api.sock --id test-vm and
// waits for its API socket.
func startFC(t *testing.T, o fcOpts) *fc {
	t.Helper()
	dir := o.dir
	if dir == "" {
		dir = shortDir(t)
	}
	p := &fc{t: t, dir: dir, sock: filepath.Join(dir, "api.sock"), done: make(chan struct{})}
	args := o.args
	if args == nil {
		args = append([]string{"--api-sock", p.sock, "--id", "test-vm"}, o.extra...)
	}
	argv := append(append([]string{}, o.prefix...), fcBin)
	argv = append(argv, args...)
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Dir = dir
	p.cmd.Env = append(os.Environ(), o.env...)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if o.cred != nil {
		p.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: o.cred}
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting fcfake: %v", err)
	}
	go func() {
		_ = p.cmd.Wait()
		p.state = p.cmd.ProcessState
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.exited() {
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	p.hc = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", p.sock)
		},
	}}
	if !o.noWait {
		p.waitSocket(5 * time.Second)
	}
	return p
}

func (p *fc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *fc) waitSocket(d time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("unix", p.sock); err == nil {
			c.Close()
			return
		}
		if p.exited() {
			p.t.Fatalf("fcfake exited (%v) before its socket appeared; stdout %q stderr %q", p.state, p.stdout.String(), p.stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	p.t.Fatalf("fcfake API socket %s did not appear within %v", p.sock, d)
}

// wait waits for the process to exit, up to d.
func (p *fc) wait(d time.Duration) (*os.ProcessState, bool) {
	select {
	case <-p.done:
		return p.state, true
	case <-time.After(d):
		return nil, false
	}
}

type resp struct {
	status int
	body   string
	header http.Header
}

// do sends one API request; body "" means no body.
func (p *fc) do(method, path, body string) resp {
	p.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://localhost"+path, rd)
	if err != nil {
		p.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	r, err := p.hc.Do(req)
	if err != nil {
		p.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return resp{status: r.StatusCode, body: string(b), header: r.Header}
}

// ok sends a request that must succeed with 204.
func (p *fc) ok(method, path, body string) {
	p.t.Helper()
	if r := p.do(method, path, body); r.status != http.StatusNoContent {
		p.t.Fatalf("%s %s %s: got %d %s, want 204", method, path, body, r.status, r.body)
	}
}

// fault sends a request that must fail with 400 and a fault_message
// containing want.
func (p *fc) fault(method, path, body, want string) {
	p.t.Helper()
	r := p.do(method, path, body)
	var f struct {
		FaultMessage string `json:"fault_message"`
	}
	if r.status != http.StatusBadRequest || json.Unmarshal([]byte(r.body), &f) != nil || !strings.Contains(f.FaultMessage, want) {
		p.t.Fatalf("%s %s %s: got %d %s, want 400 with fault_message containing %q", method, path, body, r.status, r.body, want)
	}
}

func (p *fc) instanceState() string {
	p.t.Helper()
	r := p.do("GET", "/", "")
	var info struct{ State string }
	if err := json.Unmarshal([]byte(r.body), &info); err != nil {
		p.t.Fatalf("GET /: %v (%s)", err, r.body)
	}
	return info.State
}

// fixture files a VM needs.
func (p *fc) files() (kernel, rootfs string) {
	p.t.Helper()
	kernel = filepath.Join(p.dir, "vmlinux")
	rootfs = filepath.Join(p.dir, "rootfs.ext4")
	for _, f := range []string{kernel, rootfs} {
		if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
			p.t.Fatal(err)
		}
	}
	return kernel, rootfs
}

// boot configures a minimal VM (optionally with boot_args, nil = omitted)
// and starts it.
func (p *fc) boot(bootArgs *string) {
	p.t.Helper()
	kernel, rootfs := p.files()
	bs := map[string]any{"kernel_image_path": kernel}
	if bootArgs != nil {
		bs["boot_args"] = *bootArgs
	}
	b, _ := json.Marshal(bs)
	p.ok("PUT", "/machine-config", `{"vcpu_count":2,"mem_size_mib":256}`)
	p.ok("PUT", "/boot-source", string(b))
	p.ok("PUT", "/drives/rootfs", fmt.Sprintf(`{"drive_id":"rootfs","path_on_host":%q,"is_root_device":true,"is_read_only":false}`, rootfs))
	p.ok("PUT", "/actions", `{"action_type":"InstanceStart"}`)
}

func ptr(s string) *string { return &s }

// vsockDial does the host side of Firecracker's hybrid vsock handshake and
// returns the connection and the host port from "OK <port>".
func vsockDial(ctx context.Context, uds string, port uint32) (net.Conn, string, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", uds)
	if err != nil {
		return nil, "", err
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	} else {
		c.SetDeadline(time.Now().Add(3 * time.Second))
	}
	if _, err := fmt.Fprintf(c, "CONNECT %d\n", port); err != nil {
		c.Close()
		return nil, "", err
	}
	line, err := readLine(c)
	if err != nil {
		c.Close()
		return nil, "", fmt.Errorf("no OK after CONNECT %d: %w", port, err)
	}
	if !strings.HasPrefix(line, "OK ") {
		c.Close()
		return nil, "", fmt.Errorf("unexpected handshake reply %q", line)
	}
	c.SetDeadline(time.Time{})
	return c, strings.TrimPrefix(line, "OK "), nil
}

// readLine reads one '\n'-terminated line byte by byte (so nothing after it
// is consumed).
func readLine(c net.Conn) (string, error) {
	var line []byte
	b := make([]byte, 1)
	for {
		if _, err := c.Read(b); err != nil {
			return string(line), err
		}
		if b[0] == '\n' {
			return string(line), nil
		}
		line = append(line, b[0])
	}
}

// rawVsock writes req to the UDS and returns everything read until the
// fake closes the connection (or a timeout).
func rawVsock(t *testing.T, uds, req string) (string, error) {
	t.Helper()
	c, err := net.Dial("unix", uds)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	io.WriteString(c, req)
	b, err := io.ReadAll(bufio.NewReader(c))
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return string(b), err
	}
	return string(b), nil
}

// records reads the FCFAKE_RECORD file.
func records(t *testing.T, path string) []event {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []event
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var e event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("record line %q: %v", line, err)
		}
		out = append(out, e)
	}
	return out
}
