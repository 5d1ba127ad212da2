package image

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/api"
)

// fakeVMs is a stateful stand-in for the daemon: it records VMs that
// exist.
type fakeVMs struct {
	vms     map[string]api.VM
	healthy bool
	created []string
	failDel error
}

func (f *fakeVMs) CreateVM(_ context.Context, p api.VMCreateParams) (api.VMResult, error) {
	if f.vms == nil {
		f.vms = map[string]api.VM{}
	}
	vm := api.VM{Name: p.Name, Image: p.Image, State: api.StateRunning, IP: "172.16.0.9"}
	f.vms[p.Name] = vm
	f.created = append(f.created, p.Name)
	h := &api.Health{VM: p.Name, Healthy: f.healthy, RTTMillis: 1.5}
	if !f.healthy {
		h.Reason = "agent did not answer within 8s"
	}
	return api.VMResult{VM: vm, Health: h}, nil
}

func (f *fakeVMs) DeleteVM(_ context.Context, ref string) error {
	if f.failDel != nil {
		return f.failDel
	}
	if _, ok := f.vms[ref]; !ok {
		return &api.Error{Message: "no vm " + ref, Data: api.ErrorData{Kind: api.KindNotFound}}
	}
	delete(f.vms, ref)
	return nil
}

type answer struct {
	out  string
	code int
}

// fakeSSH answers per command; the first `down` calls fail like ssh does
// while sshd is not up yet.
type fakeSSH struct {
	answers map[string]answer
	down    int
	calls   int
}

func (f *fakeSSH) RunSSH(_ context.Context, host, cmd string) (string, int, error) {
	f.calls++
	if f.calls <= f.down {
		return "ssh: connect to host " + host + " port 22: Connection refused\n", 255, nil
	}
	a, ok := f.answers[cmd]
	if !ok {
		return "", 127, nil
	}
	return a.out, a.code, nil
}

func goodAnswers() map[string]answer {
	return map[string]answer{
		cmdRootShell: {"root:x:0:0:root:/root:/bin/bash\n", 0},
		cmdWorkDisk:  {"/dev/vdb\n", 0},
		cmdAgentUnit: {"enabled\n", 0},
	}
}

func TestVerify(t *testing.T) {
	noSleep := func(context.Context, time.Duration) error { return nil }
	tests := []struct {
		name    string
		healthy bool
		down    int
		change  map[string]answer
		pass    bool
		failing []string
	}{
		{"all pass", true, 0, nil, true, nil},
		{"sshd late", true, 3, nil, true, nil},
		{"sh shell", true, 0, map[string]answer{cmdRootShell: {"root:x:0:0:root:/root:/bin/sh\n", 0}}, false, []string{"root shell"}},
		{"root not mounted", true, 0, map[string]answer{cmdWorkDisk: {"", 1}}, false, []string{"/root work disk"}},
		{"wrong disk", true, 0, map[string]answer{cmdWorkDisk: {"/dev/vda\n", 0}}, false, []string{"/root work disk"}},
		{"unit disabled", true, 0, map[string]answer{cmdAgentUnit: {"disabled\n", 1}}, false, []string{"agent unit"}},
		{"ssh never", true, 1 << 30, nil, false, []string{"ssh", "root shell", "/root work disk", "agent unit"}},
		{"agent unhealthy", false, 0, nil, false, []string{"agent health", "ssh", "root shell", "/root work disk", "agent unit"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vms := &fakeVMs{healthy: tt.healthy}
			ans := goodAnswers()
			for k, v := range tt.change {
				ans[k] = v
			}
			ssh := &fakeSSH{answers: ans, down: tt.down}
			// "ssh never" runs out of a short deadline; the others have time.
			deadline := time.Minute
			if tt.down >= 1<<30 {
				deadline = 50 * time.Millisecond
			}
			rep, err := Verify(context.Background(), VerifyOptions{Image: "void", VMs: vms, SSH: ssh, SSHDeadline: deadline, Sleep: noSleep})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Passed() != tt.pass {
				t.Fatalf("passed = %v, want %v: %+v", rep.Passed(), tt.pass, rep.Checks)
			}
			if len(rep.Checks) != 5 {
				t.Fatalf("want 5 checks, got %+v", rep.Checks)
			}
			var failing []string
			for _, c := range rep.Checks {
				if !c.Pass {
					failing = append(failing, c.Name)
				}
			}
			if strings.Join(failing, ",") != strings.Join(tt.failing, ",") {
				t.Fatalf("failing %v, want %v (%+v)", failing, tt.failing, rep.Checks)
			}
			if len(vms.created) != 1 || !strings.HasPrefix(vms.created[0], "verify-") || vms.vms[vms.created[0]].Name != "" {
				t.Fatalf("throwaway vm not created once and deleted: created %v, left %v", vms.created, vms.vms)
			}
		})
	}
}

func TestVerifyDeletesOnCancel(t *testing.T) {
	vms := &fakeVMs{healthy: true}
	ctx, cancel := context.WithCancel(context.Background())
	ssh := &fakeSSH{answers: goodAnswers(), down: 1000}
	sleep := func(ctx context.Context, _ time.Duration) error { cancel(); return ctx.Err() }
	_, err := Verify(ctx, VerifyOptions{Image: "debian", VMs: vms, SSH: ssh, SSHDeadline: time.Hour, Sleep: sleep})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v", err)
	}
	if len(vms.vms) != 0 {
		t.Fatalf("vm left after cancel: %v", vms.vms)
	}
	vms = &fakeVMs{healthy: true, failDel: errors.New("daemon gone")}
	_, err = Verify(context.Background(), VerifyOptions{Image: "debian", VMs: vms, SSH: &fakeSSH{answers: goodAnswers()}})
	if err == nil || !strings.Contains(err.Error(), "banger vm delete verify-") {
		t.Fatalf("delete failure not reported: %v", err)
	}
}

func TestSystemSSHArgs(t *testing.T) {
	s := SystemSSH{Key: "/k/id 100%", KnownHosts: "/s dir/known_hosts"}
	got := strings.Join(s.Args("172.16.0.2", "true"), " ")
	for _, w := range []string{"-i /k/id 100%%", "IdentitiesOnly=yes", `UserKnownHostsFile="/s dir/known_hosts"`, "StrictHostKeyChecking=accept-new", "BatchMode=yes", "ConnectTimeout=5", "-- root@172.16.0.2 true"} {
		if !strings.Contains(got, w) {
			t.Fatalf("args %q lack %q", got, w)
		}
	}
}

// TestSystemSSHRunSSH runs a stand-in ssh: the remote command's exit code
// and stdout come back, ssh's own failure (255) brings its stderr, and an
// ssh that never ran or was killed is an error.
func TestSystemSSHRunSSH(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "fake-ssh")
	// The last argument is the remote command; the stand-in runs it.
	script := "#!/bin/sh\nfor a; do last=$a; done\nexec sh -c \"$last\"\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	s := SystemSSH{Bin: bin, Key: "/k", KnownHosts: "/kh"}
	ctx := context.Background()
	for _, tc := range []struct {
		remote, out string
		code        int
	}{
		{"echo root:x:0:0", "root:x:0:0\n", 0},
		{"echo partial; exit 3", "partial\n", 3},
		{"echo ignored; echo 'Connection refused' >&2; exit 255", "Connection refused\n", 255},
	} {
		out, code, err := s.RunSSH(ctx, "172.16.0.2", tc.remote)
		if err != nil || out != tc.out || code != tc.code {
			t.Errorf("RunSSH(%q) = %q, %d, %v; want %q, %d", tc.remote, out, code, err, tc.out, tc.code)
		}
	}
	if _, _, err := s.RunSSH(ctx, "172.16.0.2", "kill -9 $$"); err == nil || !strings.HasPrefix(err.Error(), "running ssh to 172.16.0.2: signal: killed") {
		t.Errorf("killed ssh = %v, want an error naming the host", err)
	}
	s.Bin = filepath.Join(t.TempDir(), "no-ssh")
	if _, _, err := s.RunSSH(ctx, "172.16.0.2", "true"); err == nil || !strings.Contains(err.Error(), "ssh is not on PATH") {
		t.Errorf("missing ssh = %v", err)
	}
}
