package cli

import (
	"bytes"
	"strings"
	"testing"

	"banger/internal/api"
)

// TestPublishRejectsBeforeCallingDaemon: a bad --publish or --unpublish is
// one line naming the value, exit 2, and the daemon is never asked.
func TestPublishRejectsBeforeCallingDaemon(t *testing.T) {
	env := envWithConfig(t, "")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"vm", "create", "ok", "--publish", "80"}, `--publish "80"`},
		{[]string{"vm", "create", "ok", "-p", "8080:99999"}, "guest port"},
		{[]string{"vm", "create", "ok", "-p", "localhost:8080:80"}, "not an IP address"},
		{[]string{"vm", "set", "a", "--publish", "x:80"}, `--publish "x:80"`},
		{[]string{"vm", "set", "a", "--unpublish", "8080:80"}, `--unpublish "8080:80"`},
		{[]string{"vm", "ports"}, "needs a VM name"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, errOut, code := runCLI(t, env, tc.args...)
			if code != ExitUsage || !strings.Contains(errOut, tc.want) || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
				t.Fatalf("exit %d stderr %q; want 2 and one line containing %q", code, errOut, tc.want)
			}
		})
	}
}

func TestPrintPorts(t *testing.T) {
	var out, errb bytes.Buffer
	a := &app{stdout: &out, stderr: &errb}
	a.printPorts(api.VMPorts{VM: "dev", State: "running", AutoForward: true,
		Listeners: []api.GuestListener{
			{Proto: "tcp", Addr: "0.0.0.0", Port: 22},
			{Proto: "tcp", Addr: "0.0.0.0", Port: 80},
			{Proto: "tcp6", Addr: "::", Port: 80},
			{Proto: "tcp", Addr: "172.16.0.2", Port: 9000},
		},
		Forwards: []api.Forward{
			{Kind: api.ForwardAuto, HostAddr: "127.0.0.1", HostPort: 40000, GuestPort: 80, Requested: 80, Note: "host port 80 is privileged; chose 40000"},
			{Kind: api.ForwardPublished, HostAddr: "127.0.0.1", GuestPort: 5432, Requested: 5432, Error: "vm is stopped"},
		}})
	got := out.String()
	for _, want := range []string{
		"0.0.0.0:22", "banger vm ssh dev",
		"127.0.0.1:40000", "host port 80 is privileged; chose 40000",
		"bound to one guest address",
		":5432", "127.0.0.1:5432", "not held: vm is stopped",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if strings.Count(got, "127.0.0.1:40000") != 1 {
		t.Errorf("the v4 and v6 listener of one port both show its forward:\n%s", got)
	}
	if line := forwardLine("web", api.Forward{Kind: api.ForwardPublished, HostAddr: "127.0.0.1", HostPort: 8080, GuestPort: 80}); line != "127.0.0.1:8080 -> web:80 (published)" {
		t.Errorf("forwardLine = %q", line)
	}
}
