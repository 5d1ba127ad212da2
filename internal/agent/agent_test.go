package agent

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// guest is a fixture guest: a proc tree, an etc dir and a utmp file in a
// temp dir.
type guest struct {
	proc, etc, utmp string
}

func writeFiles(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func newGuest(t *testing.T) guest {
	t.Helper()
	dir := t.TempDir()
	g := guest{proc: filepath.Join(dir, "proc"), etc: filepath.Join(dir, "etc"), utmp: filepath.Join(dir, "utmp")}
	writeFiles(t, g.proc, map[string]string{
		"sys/kernel/hostname":       "dev\n",
		"sys/kernel/random/boot_id": "3f1c0e9a-7d7e-4c55-9d7a-0c1f6b2b9e11\n",
		"sys/kernel/osrelease":      "6.1.128\n",
		"uptime":                    "123.45 200.10\n",
		"loadavg":                   "0.50 0.25 0.10 1/87 345\n",
		"meminfo":                   "MemTotal:        1012345 kB\nMemFree:          500000 kB\nMemAvailable:     800000 kB\n",
		"1/cmdline":                 "/sbin/init\x00",
		"300/cmdline":               "sshd: root [priv]\x00",
		"301/cmdline":               "sshd-session: root@pts/0\x00\x00",
		"310/cmdline":               "sshd: root@notty\x00",
		"400/cmdline":               "bash\x00",
	})
	writeFiles(t, g.etc, map[string]string{
		"os-release": "PRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"13\"\n",
	})
	return g
}

type utmpEntry struct {
	typ  int16
	pid  int32
	line string
	user string
}

func encodeUtmp(entries []utmpEntry) []byte {
	var out []byte
	for _, e := range entries {
		r := make([]byte, utmpSize)
		binary.LittleEndian.PutUint16(r[0:2], uint16(e.typ))
		binary.LittleEndian.PutUint32(r[4:8], uint32(e.pid))
		copy(r[utmpLineOff:utmpLineOff+utmpLineLen], e.line)
		copy(r[utmpUserOff:utmpUserOff+utmpUserLen], e.user)
		out = append(out, r...)
	}
	return out
}

func fakeStatfs(path string) (DiskUsage, error) {
	switch path {
	case "/":
		return DiskUsage{TotalBytes: 4 << 30, UsedBytes: 1 << 30}, nil
	case "/root":
		return DiskUsage{TotalBytes: 8 << 30, UsedBytes: 2 << 20}, nil
	}
	return DiskUsage{}, fmt.Errorf("no such mount %s", path)
}

// serveUnix runs the real server on a unix socket and returns a client
// dialing it.
func serveUnix(t *testing.T, h http.Handler) *Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, l, h) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve after cancel: %v", err)
		}
	})
	return NewClient(func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	})
}

func TestHealthAndInfoOverUnixSocket(t *testing.T) {
	g := newGuest(t)
	if err := os.WriteFile(g.utmp, encodeUtmp([]utmpEntry{
		{typ: utmpUserProcess, pid: 301, line: "pts/0", user: "root"},
	}), 0o644); err != nil {
		t.Fatal(err)
	}
	c := serveUnix(t, Handler(Options{Version: "v1.2.3", ProcRoot: g.proc, EtcRoot: g.etc, UtmpPath: g.utmp, Statfs: fakeStatfs}))
	ctx := context.Background()

	h, rtt, err := c.Health(ctx)
	if err != nil {
		t.Fatalf("Health: %v", err)
	}
	want := Healthz{Status: "ok", Version: "v1.2.3", Protocol: ProtocolVersion, Hostname: "dev", UptimeS: 123.45, BootID: "3f1c0e9a-7d7e-4c55-9d7a-0c1f6b2b9e11"}
	if h != want {
		t.Errorf("Health = %+v, want %+v", h, want)
	}
	if rtt <= 0 {
		t.Errorf("rtt = %v, want > 0", rtt)
	}

	info, err := c.Info(ctx)
	if err != nil {
		t.Fatalf("Info: %v", err)
	}
	wantInfo := Info{
		Kernel:            "6.1.128",
		OSRelease:         "Debian GNU/Linux 13 (trixie)",
		Load:              [3]float64{0.5, 0.25, 0.1},
		MemTotalBytes:     1012345 * 1024,
		MemAvailableBytes: 800000 * 1024,
		RootDisk:          DiskUsage{Path: "/", TotalBytes: 4 << 30, UsedBytes: 1 << 30},
		HomeDisk:          DiskUsage{Path: "/root", TotalBytes: 8 << 30, UsedBytes: 2 << 20},
		SSHLogins:         2, // sshd-session pts/0 and sshd notty; the utmp entry is the same pts/0 login
	}
	if info != wantInfo {
		t.Errorf("Info = %+v\nwant   %+v", info, wantInfo)
	}
}

func TestRoutes(t *testing.T) {
	g := newGuest(t)
	sock := filepath.Join(t.TempDir(), "a.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		_ = Serve(ctx, l, Handler(Options{ProcRoot: g.proc, EtcRoot: g.etc, UtmpPath: g.utmp, Statfs: fakeStatfs}))
	}()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	tests := []struct {
		method, path string
		status       int
		bodyHas      string
	}{
		{"GET", "/healthz", 200, `"status":"ok"`},
		{"GET", "/v1/info", 200, `"ssh_logins":2`},
		{"POST", "/healthz", 405, ""},
		{"PUT", "/v1/info", 405, ""},
		{"GET", "/", 404, ""},
		{"GET", "/v1/nope", 404, ""},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, "http://agent"+tt.path, nil)
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Errorf("status = %d, want %d (body %q)", resp.StatusCode, tt.status, body)
			}
			if !strings.Contains(string(body), tt.bodyHas) {
				t.Errorf("body %q does not contain %q", body, tt.bodyHas)
			}
		})
	}
}

func TestInfoErrors(t *testing.T) {
	tests := []struct {
		name    string
		break_  func(g guest)
		opts    func(o *Options)
		wantErr string
	}{
		{name: "no meminfo", break_: func(g guest) { os.Remove(filepath.Join(g.proc, "meminfo")) }, wantErr: "meminfo"},
		{name: "bad loadavg", break_: func(g guest) { os.WriteFile(filepath.Join(g.proc, "loadavg"), []byte("x y\n"), 0o644) }, wantErr: "loadavg"},
		{name: "no MemAvailable", break_: func(g guest) { os.WriteFile(filepath.Join(g.proc, "meminfo"), []byte("MemTotal: 1 kB\n"), 0o644) }, wantErr: "MemAvailable missing"},
		{name: "no os-release", break_: func(g guest) { os.Remove(filepath.Join(g.etc, "os-release")) }, wantErr: "os-release"},
		{name: "statfs fails", opts: func(o *Options) { o.HomePath = "/home-missing" }, wantErr: "disk usage of /home-missing"},
		{name: "torn utmp", break_: func(g guest) { os.WriteFile(g.utmp, make([]byte, 100), 0o644) }, wantErr: "not a multiple"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newGuest(t)
			if tt.break_ != nil {
				tt.break_(g)
			}
			o := Options{ProcRoot: g.proc, EtcRoot: g.etc, UtmpPath: g.utmp, Statfs: fakeStatfs}
			if tt.opts != nil {
				tt.opts(&o)
			}
			_, err := serveUnix(t, Handler(o)).Info(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "500") {
				t.Errorf("Info error = %v, want a 500 mentioning %q", err, tt.wantErr)
			}
		})
	}
}

func TestHealthOverrides(t *testing.T) {
	g := newGuest(t)
	boot := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	c := serveUnix(t, Handler(Options{
		ProcRoot: g.proc, Hostname: "vm1", BootID: "b-1", BootTime: boot,
		Now: func() time.Time { return boot.Add(90 * time.Second) },
	}))
	h, _, err := c.Health(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if h.Hostname != "vm1" || h.BootID != "b-1" || h.UptimeS != 90 {
		t.Errorf("Health = %+v, want hostname vm1, boot_id b-1, uptime 90", h)
	}
}

func TestClientErrors(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
		wantErr string
	}{
		{"bad status with agent error", func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, 500, errorBody{Error: "reading /proc/uptime: gone"})
		}, "agent /healthz answered 500 Internal Server Error: reading /proc/uptime: gone"},
		{"bad status plain body", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "nope", http.StatusServiceUnavailable)
		}, "agent /healthz answered 503 Service Unavailable: nope"},
		{"not json", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "PONG\n")
		}, "decoding agent /healthz response"},
		{"status not ok", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, `{"status":"starting"}`)
		}, `status is "starting"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := serveUnix(t, tt.handler).Health(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Health error = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
	t.Run("dial fails", func(t *testing.T) {
		c := NewClient(func(ctx context.Context) (net.Conn, error) {
			return nil, errors.New("vsock socket /x/v.sock: no such file")
		})
		_, err := c.Info(context.Background())
		if err == nil || !strings.Contains(err.Error(), "calling agent /v1/info: vsock socket /x/v.sock: no such file") {
			t.Errorf("Info error = %v", err)
		}
	})
	t.Run("context deadline", func(t *testing.T) {
		c := serveUnix(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if _, _, err := c.Health(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Health error = %v, want deadline exceeded", err)
		}
	})
}

func TestCountLogins(t *testing.T) {
	tests := []struct {
		name  string
		utmp  []utmpEntry
		procs map[string]string
		want  int
	}{
		{name: "nobody", want: 0},
		{name: "utmp only (process titles changed)", utmp: []utmpEntry{
			{typ: utmpUserProcess, pid: 500, line: "pts/0", user: "root"},
			{typ: utmpUserProcess, pid: 501, line: "pts/1", user: "root"},
		}, procs: map[string]string{"500/cmdline": "-bash\x00", "501/cmdline": "-bash\x00"}, want: 2},
		{name: "stale, console and dead entries ignored", utmp: []utmpEntry{
			{typ: utmpUserProcess, pid: 999, line: "pts/3", user: "root"}, // process gone
			{typ: utmpUserProcess, pid: 1, line: "ttyS0", user: "root"},   // serial console
			{typ: 8, pid: 1, line: "pts/4", user: ""},                     // DEAD_PROCESS
			{typ: 6, pid: 1, line: "pts/5", user: "LOGIN"},                // LOGIN_PROCESS
		}, procs: map[string]string{"1/cmdline": "/sbin/init\x00"}, want: 0},
		{name: "processes only (no utmp)", procs: map[string]string{
			"20/cmdline": "sshd: root [priv]\x00",
			"21/cmdline": "sshd: root@pts/0\x00",
			"22/cmdline": "sshd-session: dev@notty\x00",
			"23/cmdline": "/usr/sbin/sshd -D\x00",
			"24/cmdline": "sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups\x00",
		}, want: 2},
		{name: "both sources see the same login", utmp: []utmpEntry{
			{typ: utmpUserProcess, pid: 21, line: "pts/0", user: "root"},
		}, procs: map[string]string{"21/cmdline": "sshd-session: root@pts/0\x00"}, want: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			proc := filepath.Join(dir, "proc")
			os.MkdirAll(proc, 0o755)
			writeFiles(t, proc, tt.procs)
			utmp := filepath.Join(dir, "utmp")
			if tt.utmp != nil {
				if err := os.WriteFile(utmp, encodeUtmp(tt.utmp), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := countLogins(proc, utmp)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("countLogins = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestOSReleaseFallback(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "os-release")
	os.WriteFile(p, []byte("# comment\nNAME='Alpine Linux'\nVERSION_ID=3.20.0\n"), 0o644)
	got, err := osRelease(p)
	if err != nil || got != "Alpine Linux 3.20.0" {
		t.Errorf("osRelease = %q, %v; want \"Alpine Linux 3.20.0\"", got, err)
	}
	os.WriteFile(p, []byte("ID=x\n"), 0o644)
	if _, err := osRelease(p); err == nil {
		t.Error("osRelease without NAME: want error")
	}
}

func TestRealStatfs(t *testing.T) {
	d, err := statfs(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if d.TotalBytes == 0 || d.UsedBytes > d.TotalBytes {
		t.Errorf("statfs = %+v, want total > 0 and used <= total", d)
	}
	if _, err := statfs(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("statfs of a missing path: want error")
	}
}

func TestServeReturnsListenerError(t *testing.T) {
	l, err := net.Listen("unix", filepath.Join(t.TempDir(), "s.sock"))
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	if err := Serve(context.Background(), l, http.NotFoundHandler()); err == nil {
		t.Error("Serve on a closed listener: want error")
	}
}
