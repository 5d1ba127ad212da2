//go:build !banger_front

package cli

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

func TestParsePortSpec(t *testing.T) {
	for _, tt := range []struct {
		in          string
		listen      string
		host, guest uint16
	}{
		{"8080:80", "127.0.0.1:8080", 8080, 80},
		{"0:5432", "127.0.0.1:0", 0, 5432},
		{"0.0.0.0:8080:80", "0.0.0.0:8080", 8080, 80},
		{"192.168.1.5:1:65535", "192.168.1.5:1", 1, 65535},
		{"[::1]:8080:80", "[::1]:8080", 8080, 80},
		{"[::]:65535:22", "[::]:65535", 65535, 22},
	} {
		p, err := parsePortSpec(tt.in)
		if err != nil {
			t.Errorf("parsePortSpec(%q): %v", tt.in, err)
			continue
		}
		if p.listenAddr() != tt.listen || p.hostPort != tt.host || p.guestPort != tt.guest {
			t.Errorf("parsePortSpec(%q) = %s, %d→%d; want %s, %d→%d", tt.in, p.listenAddr(), p.hostPort, p.guestPort, tt.listen, tt.host, tt.guest)
		}
	}
}

// Bad forwards are one line, exit 2, before any daemon is asked (none
// runs here: one that was asked would exit 1 saying bangerd is missing).
func TestForwardUsageErrors(t *testing.T) {
	env := envWithConfig(t, "")
	const form = "use [HOST_ADDR:]HOST_PORT:GUEST_PORT, e.g. 8080:80 or 0.0.0.0:8080:80"
	for _, tt := range []struct {
		args   []string
		stderr string
	}{
		{[]string{"vm", "forward"}, "banger: vm forward needs a VM and at least one port: banger vm forward VM [HOST_ADDR:]HOST_PORT:GUEST_PORT, e.g. 8080:80 or 0.0.0.0:8080:80"},
		{[]string{"vm", "forward", "dev"}, "banger: vm forward needs at least one port after the VM: banger vm forward dev 8080:80 ([HOST_ADDR:]HOST_PORT:GUEST_PORT, e.g. 8080:80 or 0.0.0.0:8080:80)"},
		{[]string{"vm", "forward", "", "80:80"}, "banger vm forward: the VM name is empty; give a VM name (see `banger vm forward --help`)"},
		{[]string{"vm", "forward", "dev", "8080"}, `banger: port forward "8080": no guest port; ` + form},
		{[]string{"vm", "forward", "dev", "8080:0"}, `banger: port forward "8080:0": guest port 0 is not a port; ` + form},
		{[]string{"vm", "forward", "dev", "8080:65536"}, `banger: port forward "8080:65536": guest port 65536 is out of range (0-65535); ` + form},
		{[]string{"vm", "forward", "dev", "70000:80"}, `banger: port forward "70000:80": host port 70000 is out of range (0-65535); ` + form},
		{[]string{"vm", "forward", "dev", "http:80"}, `banger: port forward "http:80": host port "http" is not a number; ` + form},
		{[]string{"vm", "forward", "dev", "8080:"}, `banger: port forward "8080:": guest port is missing; ` + form},
		{[]string{"vm", "forward", "dev", "-1:80"}, `banger: unknown shorthand flag: '1' in -1:80 (see ` + "`banger vm forward --help`)"},
		{[]string{"vm", "forward", "dev", "localhost:8080:80"}, `banger: port forward "localhost:8080:80": host address "localhost" is not an IP address (IPv6 goes in brackets); ` + form},
		{[]string{"vm", "forward", "dev", "::1:8080:80"}, `banger: port forward "::1:8080:80": host address "::1" is not an IP address (IPv6 goes in brackets); ` + form},
		{[]string{"vm", "forward", "dev", "8080:80", "0.0.0.0:8080:81"}, `banger: port forwards "8080:80" and "0.0.0.0:8080:81" both use host port 8080; give each forward its own host port`},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			_, errOut, code := runCLI(t, env, tt.args...)
			if got := strings.TrimSpace(errOut); code != 2 || got != tt.stderr {
				t.Fatalf("exit %d, stderr %q\nwant exit 2, stderr %q", code, got, tt.stderr)
			}
		})
	}
	// Two forwards picking free ports (0) are not duplicates; they get
	// past validation to the daemon (here: none).
	_, errOut, code := runCLI(t, env, "vm", "forward", "dev", "0:80", "0:81")
	if code != 1 || !strings.Contains(errOut, "bangerd not found") {
		t.Fatalf("valid forwards: exit %d, stderr %q; want 1 and the missing daemon", code, errOut)
	}
}

func TestForwardLogLine(t *testing.T) {
	var b bytes.Buffer
	log := slog.New(&lineHandler{mu: &sync.Mutex{}, w: &b}).With("forward", "dev:80").With("listen", "127.0.0.1:8080")
	log.Warn("forward: dialling the far end; closing the connection", "client", "127.0.0.1:5000", "err", errors.New("nothing listens on port 80 in the guest"))
	log.Debug("not shown")
	want := "banger: forward dev:80: dialling the far end; closing the connection (client=127.0.0.1:5000): nothing listens on port 80 in the guest\n"
	if b.String() != want {
		t.Fatalf("log = %q\nwant  %q", b.String(), want)
	}
}
