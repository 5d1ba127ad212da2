package hostops

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestResolverOpsRefuseBadArguments(t *testing.T) {
	caller := Caller{UID: 1000, GID: 1000}
	tests := []struct {
		name, op, args, want string
	}{
		{"link on docker0", "resolver-link-apply", `{"bridge":"docker0","addr":"172.16.0.1:42069"}`, `bridge "docker0" is not banger's`},
		{"link on eth0 revert", "resolver-link-revert", `{"bridge":"eth0"}`, `bridge "eth0" is not banger's`},
		{"link name too long", "resolver-link-apply", `{"bridge":"banger0123456789","addr":"172.16.0.1:42069"}`, "at most 15"},
		{"link addr without port", "resolver-link-apply", `{"bridge":"banger0","addr":"172.16.0.1"}`, "not IPv4 ADDR:PORT"},
		{"link addr ipv6", "resolver-link-apply", `{"bridge":"banger0","addr":"[fd00::1]:53"}`, "not IPv4 ADDR:PORT"},
		{"link addr loopback", "resolver-link-apply", `{"bridge":"banger0","addr":"127.0.0.1:42069"}`, "not a unicast host address"},
		{"link addr port 0", "resolver-link-apply", `{"bridge":"banger0","addr":"172.16.0.1:0"}`, "port 0"},
		{"link option smuggled", "resolver-link-apply", `{"bridge":"banger0","addr":"172.16.0.1:53","domain":"~."}`, "unknown field"},
		{"revert with addr", "resolver-link-revert", `{"bridge":"banger0","addr":"172.16.0.1:53"}`, "only a bridge"},
		{"dnsmasq flavor", "resolver-dnsmasq-apply", `{"flavor":"../../etc/passwd","addr":"127.0.0.1:42069"}`, "dnsmasq flavor"},
		{"dnsmasq path smuggled", "resolver-dnsmasq-apply", `{"flavor":"dnsmasq","addr":"127.0.0.1:42069","path":"/etc/x"}`, "unknown field"},
		{"dnsmasq addr garbage", "resolver-dnsmasq-apply", `{"flavor":"dnsmasq","addr":"127.0.0.1#42069\nserver=8.8.8.8"}`, "not IPv4 ADDR:PORT"},
		{"dnsmasq revert flavor", "resolver-dnsmasq-revert", `{"flavor":"hosts"}`, "dnsmasq flavor"},
		{"dnsmasq revert addr", "resolver-dnsmasq-revert", `{"flavor":"dnsmasq","addr":"127.0.0.1:1"}`, "only a flavor"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := dispatch(context.Background(), caller, tt.op, []byte(tt.args))
			if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("%s %s = %v; want ErrRefused containing %q", tt.op, tt.args, err, tt.want)
			}
		})
	}
}

func TestResolverOpsRegistered(t *testing.T) {
	for _, op := range []string{"resolver-link-apply", "resolver-link-revert", "resolver-dnsmasq-apply", "resolver-dnsmasq-revert"} {
		if !slices.Contains(OpNames(), op) {
			t.Errorf("op %s is not registered", op)
		}
	}
}

func TestResolverLinkMissingBridge(t *testing.T) {
	caller := Caller{UID: 1000, GID: 1000}
	_, err := dispatch(context.Background(), caller, "resolver-link-apply", []byte(`{"bridge":"bangerzz97","addr":"172.16.0.1:42069"}`))
	if err == nil || errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "bridge bangerzz97 does not exist yet") {
		t.Fatalf("apply on a missing bridge = %v", err)
	}
	res, err := dispatch(context.Background(), caller, "resolver-link-revert", []byte(`{"bridge":"bangerzz97"}`))
	if err != nil || string(res) != `{"reverted":false}` {
		t.Fatalf("revert on a missing bridge = %s, %v", res, err)
	}
}

func TestDnsmasqDropIn(t *testing.T) {
	root := t.TempDir()
	addr := netip.MustParseAddrPort("127.0.0.1:42069")
	if _, err := writeDnsmasq(root, DnsmasqPlain, addr); err == nil || !strings.Contains(err.Error(), "is dnsmasq installed?") {
		t.Fatalf("write without /etc/dnsmasq.d: %v", err)
	}
	for _, d := range []string{"etc/dnsmasq.d", "etc/NetworkManager/dnsmasq.d"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, flavor := range []string{DnsmasqPlain, DnsmasqNetworkManager} {
		t.Run(flavor, func(t *testing.T) {
			res, err := writeDnsmasq(root, flavor, addr)
			if err != nil || !res.Changed {
				t.Fatalf("write: %+v %v", res, err)
			}
			want, _ := dnsmasqPathUnder(root, flavor)
			if res.Path != want {
				t.Fatalf("path %s, want %s", res.Path, want)
			}
			b, err := os.ReadFile(res.Path)
			if err != nil || !strings.HasSuffix(string(b), "\nserver=/vm/127.0.0.1#42069\n") {
				t.Fatalf("content %q %v", b, err)
			}
			if fi, _ := os.Stat(res.Path); fi.Mode().Perm() != 0o644 {
				t.Fatalf("mode %v", fi.Mode())
			}
			if res, err := writeDnsmasq(root, flavor, addr); err != nil || res.Changed {
				t.Fatalf("second write: %+v %v", res, err)
			}
			if res, err := removeDnsmasq(root, flavor); err != nil || !res.Changed {
				t.Fatalf("remove: %+v %v", res, err)
			}
			if _, err := os.Stat(want); !os.IsNotExist(err) {
				t.Fatalf("file left: %v", err)
			}
			if res, err := removeDnsmasq(root, flavor); err != nil || res.Changed {
				t.Fatalf("remove again: %+v %v", res, err)
			}
			// A file of that name that banger did not write is left alone.
			if err := os.WriteFile(want, []byte("server=/vm/10.0.0.1\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			for what, fn := range map[string]func() error{
				"write":  func() error { _, err := writeDnsmasq(root, flavor, addr); return err },
				"remove": func() error { _, err := removeDnsmasq(root, flavor); return err },
			} {
				if err := fn(); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "not written by banger") {
					t.Fatalf("%s over a foreign file: %v", what, err)
				}
			}
			if b, _ := os.ReadFile(want); string(b) != "server=/vm/10.0.0.1\n" {
				t.Fatalf("foreign file changed: %q", b)
			}
			os.Remove(want)
		})
	}
}

func TestDetectResolver(t *testing.T) {
	found := func(string) (string, error) { return "/usr/bin/resolvectl", nil }
	missing := func(string) (string, error) { return "", errors.New("not found") }
	tests := []struct {
		name       string
		files      map[string]string
		dirs       []string
		look       func(string) (string, error)
		kind, flav string
		why        string
	}{
		{"resolved", nil, []string{"run/systemd/resolve"}, found, ResolverResolved, "", "systemd-resolved"},
		{"no resolvectl", nil, []string{"run/systemd/resolve"}, missing, ResolverDnsmasq, DnsmasqPlain, "no resolvectl on PATH"},
		{"resolved not running", nil, nil, found, ResolverDnsmasq, DnsmasqPlain, "does not exist"},
		{"networkmanager", map[string]string{"etc/NetworkManager/NetworkManager.conf": "[main]\ndns = dnsmasq\n"}, nil, missing, ResolverDnsmasq, DnsmasqNetworkManager, "dns=dnsmasq"},
		{"networkmanager overridden", map[string]string{
			"etc/NetworkManager/NetworkManager.conf":  "[main]\ndns=dnsmasq\n",
			"etc/NetworkManager/conf.d/99-local.conf": "[main]\ndns=default\n",
		}, nil, missing, ResolverDnsmasq, DnsmasqPlain, "assuming dnsmasq"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			for _, d := range tt.dirs {
				os.MkdirAll(filepath.Join(root, d), 0o755)
			}
			for f, c := range tt.files {
				os.MkdirAll(filepath.Dir(filepath.Join(root, f)), 0o755)
				os.WriteFile(filepath.Join(root, f), []byte(c), 0o644)
			}
			r := detectResolver(root, tt.look)
			if r.Kind != tt.kind || r.Flavor != tt.flav || !strings.Contains(r.Why, tt.why) {
				t.Fatalf("got %+v; want %s/%s with %q", r, tt.kind, tt.flav, tt.why)
			}
		})
	}
}

func TestResolverSetupRecord(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	if _, ok, err := LoadResolverSetup(dir); ok || err != nil {
		t.Fatalf("load without a record: %v %v", ok, err)
	}
	rec := ResolverSetup{Resolver: ResolverResolved, Bridge: "banger0", Addr: "172.16.0.1:42069", AppliedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	if err := SaveResolverSetup(dir, rec); err != nil {
		t.Fatal(err)
	}
	got, ok, err := LoadResolverSetup(dir)
	if err != nil || !ok || got != rec {
		t.Fatalf("round trip: %+v %v %v", got, ok, err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, ResolverSetupFile)); fi.Mode().Perm() != 0o600 {
		t.Fatalf("record mode %v", fi.Mode())
	}
	os.WriteFile(filepath.Join(dir, ResolverSetupFile), []byte(`{"resolver":"hosts"}`), 0o600)
	if _, _, err := LoadResolverSetup(dir); err == nil || !strings.Contains(err.Error(), `unknown resolver "hosts"`) {
		t.Fatalf("bad record: %v", err)
	}
	if err := RemoveResolverSetup(dir); err != nil {
		t.Fatal(err)
	}
	if err := RemoveResolverSetup(dir); err != nil {
		t.Fatalf("removing a missing record: %v", err)
	}
}
