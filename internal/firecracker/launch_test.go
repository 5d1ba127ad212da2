package firecracker

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestArgs(t *testing.T) {
	tests := []struct {
		spec LaunchSpec
		want []string
	}{
		{LaunchSpec{APISock: "/s/api.sock", ID: "vm-1", LogPath: "/s/fc.log"},
			[]string{"--api-sock", "/s/api.sock", "--id", "vm-1", "--log-path", "/s/fc.log", "--level", "Info"}},
		{LaunchSpec{APISock: "/s/api.sock", ID: "vm-1"},
			[]string{"--api-sock", "/s/api.sock", "--id", "vm-1", "--level", "Info"}},
	}
	for _, tt := range tests {
		if got := Args(tt.spec); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Args(%+v) = %q, want %q", tt.spec, got, tt.want)
		}
	}
}

func TestValidateID(t *testing.T) {
	tests := []struct {
		id string
		ok bool
	}{
		{"a", true},
		{"0123abcd-EF", true},
		{strings.Repeat("x", 64), true},
		{strings.Repeat("x", 65), false},
		{"", false},
		{"vm_1", false},
		{"vm.1", false},
		{"vm 1", false},
	}
	for _, tt := range tests {
		if err := ValidateID(tt.id); (err == nil) != tt.ok {
			t.Errorf("ValidateID(%q) = %v, want ok=%v", tt.id, err, tt.ok)
		}
	}
}

func TestCheckSocketPath(t *testing.T) {
	p107 := "/" + strings.Repeat("a", 106)
	p108 := "/" + strings.Repeat("a", 107)
	if err := CheckSocketPath(p107); err != nil {
		t.Errorf("107 bytes: %v", err)
	}
	err := CheckSocketPath(p108)
	if err == nil {
		t.Fatal("108 bytes: no error")
	}
	mustContain(t, err.Error(), p108, "108 bytes", "BANGER_STATE_DIR")
	if err := CheckSocketPath(""); err == nil {
		t.Error("empty path: no error")
	}
}

func TestLaunchRejectsBadSpec(t *testing.T) {
	dir := shortDir(t)
	exe, _ := os.Executable()
	notExec := filepath.Join(dir, "plain")
	os.WriteFile(notExec, []byte("x"), 0o644)
	tests := []struct {
		name string
		spec LaunchSpec
		want string
	}{
		{"bad id", LaunchSpec{Binary: exe, APISock: dir + "/a.sock", ID: "vm_1"}, "may contain only letters"},
		{"empty id", LaunchSpec{Binary: exe, APISock: dir + "/a.sock"}, "must be 1..64"},
		{"long socket", LaunchSpec{Binary: exe, APISock: dir + "/" + strings.Repeat("s", 110), ID: "vm"}, "107-byte limit"},
		{"no binary", LaunchSpec{APISock: dir + "/a.sock", ID: "vm"}, "firecracker_bin"},
		{"missing binary", LaunchSpec{Binary: dir + "/nope", APISock: dir + "/a.sock", ID: "vm"}, "no such file"},
		{"not in PATH", LaunchSpec{Binary: "banger-no-such-firecracker", APISock: dir + "/a.sock", ID: "vm"}, "not found in PATH"},
		{"not executable", LaunchSpec{Binary: notExec, APISock: dir + "/a.sock", ID: "vm"}, "not an executable"},
		{"socket is a dir", LaunchSpec{Binary: exe, APISock: dir, ID: "vm"}, "is a directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.spec.ConsolePath = filepath.Join(dir, "console.log")
			_, err := Launch(t.Context(), testWatcher(t), tt.spec)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Launch error %v, want one containing %q", err, tt.want)
			}
			if _, err := os.Stat(tt.spec.ConsolePath); err == nil {
				t.Error("console log created although nothing was started")
			}
		})
	}
}

func TestLaunchAndWaitReady(t *testing.T) {
	dir := shortDir(t)
	s := LaunchSpec{
		APISock:     filepath.Join(dir, "api.sock"),
		ID:          "vm-ready",
		LogPath:     filepath.Join(dir, "firecracker.log"),
		ConsolePath: filepath.Join(dir, "console.log"),
		Env:         []string{"FCTEST_SOCKET_DELAY=150ms"},
	}
	// A stale socket file from an earlier run must not stop the launch.
	if err := os.WriteFile(s.APISock, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.ConsolePath, []byte("earlier boot\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	p := launchHelper(t, "serve", s)
	c := NewClient(s.APISock)
	if err := WaitReady(t.Context(), c, 10*time.Second, Exited(p, s.LogPath, s.ConsolePath)); err != nil {
		t.Fatalf("WaitReady: %v", err)
	}
	if took := time.Since(start); took < 150*time.Millisecond {
		t.Errorf("ready after %s, before the helper's socket delay", took)
	}
	if _, err := c.GetMachineConfig(t.Context()); err != nil {
		t.Errorf("GET /machine-config after ready: %v", err)
	}

	// New session: the process leads its own session and process group.
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(p.Pid()) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))
	if fields[2] != strconv.Itoa(p.Pid()) || fields[3] != strconv.Itoa(p.Pid()) {
		t.Errorf("pgrp %s, session %s; want both %d (setsid)", fields[2], fields[3], p.Pid())
	}

	if fi, err := os.Stat(s.LogPath); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("log file: %v, %v; want mode 0600", fi, err)
	}
	waitFor(t, "console output", 5*time.Second, func() bool {
		b, _ := os.ReadFile(s.ConsolePath)
		return strings.Contains(string(b), "helper stderr line")
	})
	console, _ := os.ReadFile(s.ConsolePath)
	mustContain(t, string(console), "earlier boot\n", "up, stdin=/dev/null", "helper stderr line")
	logData, _ := os.ReadFile(s.LogPath)
	mustContain(t, string(logData), "log: instance vm-ready")

	// A second launch on a socket a live process serves is refused and
	// leaves the socket alone.
	_, err = Launch(t.Context(), testWatcher(t), LaunchSpec{Binary: "/bin/true", APISock: s.APISock, ID: "vm-ready"})
	if err == nil || !strings.Contains(err.Error(), "already serves") {
		t.Errorf("second launch: %v, want an 'already serves' error", err)
	}
	if _, err := os.Stat(s.APISock); err != nil {
		t.Errorf("socket of the live process was touched: %v", err)
	}

	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.Done()
	if got := p.Status().String(); got != "killed by signal SIGKILL" {
		t.Errorf("status = %q", got)
	}
}

func TestWaitReadyProcessDiesEarly(t *testing.T) {
	dir := shortDir(t)
	script := filepath.Join(dir, "fc")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho booting\necho boom >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	s := LaunchSpec{Binary: script, APISock: filepath.Join(dir, "api.sock"), ID: "vm-dies",
		LogPath: filepath.Join(dir, "fc.log"), ConsolePath: filepath.Join(dir, "console.log")}
	p, err := Launch(t.Context(), testWatcher(t), s)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = WaitReady(t.Context(), NewClient(s.APISock), 30*time.Second, Exited(p, s.LogPath, s.ConsolePath))
	if err == nil {
		t.Fatal("WaitReady succeeded for a dead process")
	}
	mustContain(t, err.Error(), "exited before its api socket", "exit status 3", "console.log: booting | boom")
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("the reason spans lines: %q", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("early death noticed only after %s", took)
	}
	if st := p.Status(); !st.Known || st.Code != 3 {
		t.Errorf("status %+v, want exit code 3", st)
	}
}

func TestWaitReadyTimeout(t *testing.T) {
	dir := shortDir(t)
	s := LaunchSpec{APISock: filepath.Join(dir, "api.sock"), ID: "vm-slow"}
	p := launchHelper(t, "sleep", s)
	start := time.Now()
	err := WaitReady(t.Context(), NewClient(s.APISock), 200*time.Millisecond, Exited(p))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error %v, want context.DeadlineExceeded", err)
	}
	mustContain(t, err.Error(), "gave up after", s.APISock, "no such file")
	if took := time.Since(start); took < 200*time.Millisecond || took > 3*time.Second {
		t.Errorf("gave up after %s, want about 200ms", took)
	}
	if p.Exited() {
		t.Error("the helper died")
	}
}

func TestWaitReadyLateSocket(t *testing.T) {
	sock := filepath.Join(shortDir(t), "api.sock")
	go func() {
		time.Sleep(100 * time.Millisecond)
		newFakeAPI(t, sock, nil)
	}()
	if err := WaitReady(t.Context(), NewClient(sock), 5*time.Second, nil); err != nil {
		t.Fatalf("WaitReady: %v", err)
	}
}

func TestWaitReadyAPIErrorUntilTimeout(t *testing.T) {
	f := newFakeAPI(t, filepath.Join(shortDir(t), "api.sock"), func(*http.Request, []byte) (int, string) {
		return 400, `{"fault_message":"not yet"}`
	})
	err := WaitReady(t.Context(), NewClient(f.sock), 100*time.Millisecond, nil)
	if err == nil {
		t.Fatal("ready although every GET failed")
	}
	mustContain(t, err.Error(), "not yet")
}

func TestWaitReadyCancel(t *testing.T) {
	sock := filepath.Join(shortDir(t), "api.sock")
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(50*time.Millisecond, cancel)
	err := WaitReady(ctx, NewClient(sock), 0, nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
}
