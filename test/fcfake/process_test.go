package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestFlagsAndExitCodes(t *testing.T) {
	dir := shortDir(t)
	sock := filepath.Join(dir, "s.sock")
	tests := []struct {
		name     string
		args     []string
		code     int            // exit code when signal is 0
		signal   syscall.Signal // death by signal
		inOutput string
	}{
		{name: "version", args: []string{"--version"}, code: 0, inOutput: "Firecracker v1.16.1"},
		{name: "help", args: []string{"--help"}, code: 0, inOutput: "Firecracker v1.16.1"},
		{name: "short help", args: []string{"-h"}, code: 0, inOutput: "Firecracker v1.16.1"},
		{name: "flag=value", args: []string{"--api-sock=" + sock}, code: 153, inOutput: "--api-sock="},
		{name: "unknown flag", args: []string{"--api-sock", sock, "--bogus"}, code: 153, inOutput: "'--bogus'"},
		{name: "single dash", args: []string{"-api-sock", sock}, code: 153},
		{name: "positional", args: []string{"api.sock"}, code: 153},
		{name: "repeated flag", args: []string{"--id", "a", "--id", "b"}, code: 153, inOutput: "more than once"},
		{name: "repeated bool flag", args: []string{"--show-level", "--show-level"}, code: 153, inOutput: "more than once"},
		{name: "value starts with --", args: []string{"--api-sock", "--id", "x"}, code: 153, inOutput: "requires a value"},
		{name: "missing value", args: []string{"--id"}, code: 153, inOutput: "requires a value"},
		{name: "no-api without config", args: []string{"--no-api"}, code: 153, inOutput: "config-file"},
		{name: "seccomp both", args: []string{"--seccomp-filter", "f.bpf", "--no-seccomp"}, code: 153},
		{name: "bad number", args: []string{"--http-api-max-payload-size", "lots"}, code: 153},
		{name: "bad level", args: []string{"--api-sock", sock, "--level", "loud"}, code: 152, inOutput: "loud"},
		{name: "bad id char", args: []string{"--api-sock", sock, "--id", "vm_1"}, signal: syscall.SIGABRT, inOutput: "Invalid instance ID"},
		{name: "empty id", args: []string{"--api-sock", sock, "--id", ""}, signal: syscall.SIGABRT, inOutput: "InvalidLen(0"},
		{name: "id too long", args: []string{"--api-sock", sock, "--id", strings.Repeat("a", 65)}, signal: syscall.SIGABRT, inOutput: "InvalidLen(65"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(fcBin, tt.args...)
			out, _ := cmd.CombinedOutput()
			ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
			if tt.signal != 0 {
				if !ws.Signaled() || ws.Signal() != tt.signal {
					t.Errorf("status %v, want death by %v; output %q", cmd.ProcessState, tt.signal, out)
				}
			} else if ws.Signaled() || ws.ExitStatus() != tt.code {
				t.Errorf("status %v, want exit %d; output %q", cmd.ProcessState, tt.code, out)
			}
			if !strings.Contains(string(out), tt.inOutput) {
				t.Errorf("output %q does not contain %q", out, tt.inOutput)
			}
			if _, err := os.Stat(sock); err == nil {
				t.Errorf("an argument error left an API socket behind")
			}
		})
	}
}

func TestStaleSocketExits1(t *testing.T) {
	dir := shortDir(t)
	sock := filepath.Join(dir, "api.sock")
	logPath := filepath.Join(dir, "fc.log")
	if err := os.WriteFile(sock, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(fcBin, "--api-sock", sock, "--log-path", logPath)
	out, _ := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 1 {
		t.Fatalf("exit %d, want 1; output %q", code, out)
	}
	log, _ := os.ReadFile(logPath)
	want := "Failed to open the API socket at: " + sock + ". Check that it is not already used."
	if !strings.Contains(string(log), want) {
		t.Errorf("log %q does not contain %q", log, want)
	}
	if fi, err := os.Stat(sock); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("the stale file was touched: %v %v", fi, err)
	}
}

func TestSocketModeAndNeverUnlinked(t *testing.T) {
	old := syscall.Umask(0o027)
	p := startFC(t, fcOpts{})
	syscall.Umask(old)
	fi, err := os.Stat(p.sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o750 {
		t.Errorf("socket mode %v, want a socket with 0750 (0777 &^ umask 027)", fi.Mode())
	}
	p.boot(nil)
	p.ok("PUT", "/actions", `{"action_type":"SendCtrlAltDel"}`)
	st, ok := p.wait(3 * time.Second)
	if !ok || st.ExitCode() != 0 {
		t.Fatalf("after SendCtrlAltDel: %v, %v; want exit 0", st, ok)
	}
	if _, err := os.Stat(p.sock); err != nil {
		t.Errorf("API socket gone after a clean exit (Firecracker never unlinks it): %v", err)
	}
}

func TestSIGTERMIsNotHandled(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			rec := filepath.Join(shortDir(t), "rec.jsonl")
			p := startFC(t, fcOpts{env: []string{"FCFAKE_RECORD=" + rec}})
			p.boot(nil)
			p.cmd.Process.Signal(sig)
			st, ok := p.wait(3 * time.Second)
			if !ok {
				t.Fatal("still running after the signal")
			}
			ws := st.Sys().(syscall.WaitStatus)
			if !ws.Signaled() || ws.Signal() != sig {
				t.Errorf("status %v, want death by %v", st, sig)
			}
			if _, err := os.Stat(p.sock); err != nil {
				t.Errorf("API socket removed: %v", err)
			}
			for _, e := range records(t, rec) {
				if e.Event == "exit" {
					t.Errorf("an exit was recorded for a death by signal: %+v", e)
				}
			}
		})
	}
}

func TestSendCtrlAltDel(t *testing.T) {
	tests := []struct {
		name     string
		bootArgs *string
		env      []string
		exits    bool
	}{
		{name: "reboot=k", bootArgs: ptr("console=ttyS0 reboot=k panic=1 i8042.noaux"), exits: true},
		{name: "default boot args", bootArgs: nil, exits: true},
		{name: "reboot=k among other types", bootArgs: ptr("reboot=w,k"), exits: true},
		{name: "no reboot=k", bootArgs: ptr("console=ttyS0 panic=1"), exits: false},
		{name: "reboot=t", bootArgs: ptr("console=ttyS0 reboot=t"), exits: false},
		{name: "empty boot args", bootArgs: ptr(""), exits: false},
		{name: "guest ignores it", bootArgs: ptr("reboot=k"), env: []string{"FCFAKE_IGNORE_CTRL_ALT_DEL=1"}, exits: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := startFC(t, fcOpts{env: tt.env})
			p.fault("PUT", "/actions", `{"action_type":"SendCtrlAltDel"}`, "not supported before starting the microVM")
			p.boot(tt.bootArgs)
			sent := time.Now()
			p.ok("PUT", "/actions", `{"action_type":"SendCtrlAltDel"}`)
			// A staying process is given more than the fake's shutdown delay.
			wait := 700 * time.Millisecond
			if tt.exits {
				wait = 5 * time.Second
			}
			st, exited := p.wait(wait)
			if exited != tt.exits {
				t.Fatalf("exited = %v (%v), want %v", exited, st, tt.exits)
			}
			if exited {
				if st.ExitCode() != 0 {
					t.Errorf("exit code %d, want 0", st.ExitCode())
				}
				if took := time.Since(sent); took < 50*time.Millisecond {
					t.Errorf("exited %v after the 204; a guest takes a moment to reboot", took)
				}
				if !strings.Contains(p.stdout.String(), "reboot: Restarting system") {
					t.Errorf("console has no reboot line: %q", p.stdout.String())
				}
				return
			}
			if got := p.instanceState(); got != "Running" {
				t.Errorf("state %q, want Running", got)
			}
		})
	}
}

func TestSwitches(t *testing.T) {
	t.Run("FCFAKE_EXIT_AFTER_START", func(t *testing.T) {
		for _, tc := range []struct {
			env  []string
			code int
		}{
			{[]string{"FCFAKE_EXIT_AFTER_START=200ms"}, 0},
			{[]string{"FCFAKE_EXIT_AFTER_START=200ms", "FCFAKE_EXIT_CODE=3"}, 3},
		} {
			p := startFC(t, fcOpts{env: tc.env})
			if _, exited := p.wait(400 * time.Millisecond); exited {
				t.Fatal("exited before InstanceStart")
			}
			p.boot(nil)
			start := time.Now()
			st, ok := p.wait(3 * time.Second)
			if !ok || st.ExitCode() != tc.code {
				t.Fatalf("%v: %v %v, want exit %d", tc.env, st, ok, tc.code)
			}
			if took := time.Since(start); took < 150*time.Millisecond {
				t.Errorf("exited %v after start, want about 200ms", took)
			}
		}
	})
	t.Run("FCFAKE_EXIT_LOG", func(t *testing.T) {
		dir := shortDir(t)
		logPath := filepath.Join(dir, "fc.log")
		if err := os.WriteFile(logPath, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		p := startFC(t, fcOpts{dir: dir, env: []string{"FCFAKE_EXIT_AFTER_START=100ms", "FCFAKE_EXIT_CODE=1",
			"FCFAKE_EXIT_LOG=Failure in vCPU 0: Received KVM_EXIT_INTERNAL_ERROR"}, extra: []string{"--log-path", logPath}})
		p.boot(nil)
		if st, ok := p.wait(3 * time.Second); !ok || st.ExitCode() != 1 {
			t.Fatalf("%v %v, want exit 1", st, ok)
		}
		b, _ := os.ReadFile(logPath)
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) < 2 || !strings.HasSuffix(lines[len(lines)-2], "] Failure in vCPU 0: Received KVM_EXIT_INTERNAL_ERROR") ||
			!strings.Contains(lines[len(lines)-1], "exiting with code 1") {
			t.Errorf("log does not end with the line and the exit:\n%s", b)
		}
	})
	t.Run("FCFAKE_FAIL_START", func(t *testing.T) {
		p := startFC(t, fcOpts{env: []string{"FCFAKE_FAIL_START=1"}})
		kernel, _ := p.files()
		p.ok("PUT", "/boot-source", `{"kernel_image_path":"`+kernel+`"}`)
		p.fault("PUT", "/actions", `{"action_type":"InstanceStart"}`, "Start microvm error")
		if got := p.instanceState(); got != "Not started" {
			t.Errorf("state %q after a failed start, want Not started", got)
		}
	})
	t.Run("FCFAKE_SOCKET_DELAY", func(t *testing.T) {
		p := startFC(t, fcOpts{env: []string{"FCFAKE_SOCKET_DELAY=600ms"}, noWait: true})
		time.Sleep(300 * time.Millisecond)
		if _, err := os.Stat(p.sock); err == nil {
			t.Fatal("API socket exists before the delay")
		}
		p.waitSocket(3 * time.Second)
		if got := p.instanceState(); got != "Not started" {
			t.Errorf("state %q", got)
		}
	})
	t.Run("bad switch value", func(t *testing.T) {
		cmd := exec.Command(fcBin, "--api-sock", filepath.Join(shortDir(t), "s"))
		cmd.Env = append(os.Environ(), "FCFAKE_BOOT_DELAY=soon")
		out, _ := cmd.CombinedOutput()
		if cmd.ProcessState.ExitCode() != 1 || !strings.Contains(string(out), "FCFAKE_BOOT_DELAY") {
			t.Errorf("exit %d output %q, want 1 naming FCFAKE_BOOT_DELAY", cmd.ProcessState.ExitCode(), out)
		}
	})
}

func TestRecord(t *testing.T) {
	rec := filepath.Join(shortDir(t), "rec.jsonl")
	env := []string{"FCFAKE_RECORD=" + rec}
	a := startFC(t, fcOpts{env: env})
	b := startFC(t, fcOpts{env: env})
	a.boot(nil)
	b.do("PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":128,"nope":1}`)
	a.ok("PUT", "/actions", `{"action_type":"SendCtrlAltDel"}`)
	if st, ok := a.wait(3 * time.Second); !ok || st.ExitCode() != 0 {
		t.Fatalf("a: %v %v", st, ok)
	}
	evs := records(t, rec)
	byPID := map[int][]event{}
	for _, e := range evs {
		if e.T == "" || e.ID != "test-vm" {
			t.Errorf("record line without time or id: %+v", e)
		}
		if _, err := time.Parse(time.RFC3339Nano, e.T); err != nil {
			t.Errorf("time %q: %v", e.T, err)
		}
		byPID[e.PID] = append(byPID[e.PID], e)
	}
	aev := byPID[a.cmd.Process.Pid]
	var kinds []string
	for _, e := range aev {
		kinds = append(kinds, e.Event+":"+e.Method+" "+e.Path)
	}
	want := []string{"start: ", "request:PUT /machine-config", "response:PUT /machine-config", "request:PUT /boot-source", "response:PUT /boot-source",
		"request:PUT /drives/rootfs", "response:PUT /drives/rootfs", "request:PUT /actions", "response:PUT /actions",
		"request:PUT /actions", "response:PUT /actions", "exit: "}
	if strings.Join(kinds, ",") != strings.Join(want, ",") {
		t.Errorf("a's events:\n%v\nwant\n%v", kinds, want)
	}
	last := aev[len(aev)-1]
	if last.Code == nil || *last.Code != 0 {
		t.Errorf("exit event %+v, want code 0", last)
	}
	if string(aev[len(aev)-3].Body) != `{"action_type":"SendCtrlAltDel"}` {
		t.Errorf("request body recorded as %s", aev[len(aev)-3].Body)
	}
	bev := byPID[b.cmd.Process.Pid]
	if len(bev) != 3 || bev[2].Status != 400 || !strings.Contains(bev[2].Fault, "unknown field `nope`") {
		t.Errorf("b's events %+v, want start, request, 400 response", bev)
	}
}
