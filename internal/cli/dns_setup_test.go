//go:build !banger_front

package cli

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"banger/internal/config"
	"banger/internal/hostops"
)

// fakeResolverHost records the privileged calls and keeps the state they
// would leave: resolved's per-link settings and the dnsmasq drop-in.
type fakeResolverHost struct {
	calls   []string
	links   map[string]netip.AddrPort
	dropIns map[string]bool
}

func (f *fakeResolverHost) ResolverLinkApply(_ context.Context, bridge string, addr netip.AddrPort) error {
	f.calls = append(f.calls, "link-apply "+bridge+" "+addr.String())
	f.links[bridge] = addr
	return nil
}

func (f *fakeResolverHost) ResolverLinkRevert(_ context.Context, bridge string) (bool, error) {
	f.calls = append(f.calls, "link-revert "+bridge)
	_, ok := f.links[bridge]
	delete(f.links, bridge)
	return ok, nil
}

func (f *fakeResolverHost) DnsmasqApply(_ context.Context, flavor string, addr netip.AddrPort) (hostops.DnsmasqResult, error) {
	f.calls = append(f.calls, "dnsmasq-apply "+flavor+" "+addr.String())
	p, _ := hostops.DnsmasqPath(flavor)
	changed := !f.dropIns[flavor]
	f.dropIns[flavor] = true
	return hostops.DnsmasqResult{Path: p, Changed: changed}, nil
}

func (f *fakeResolverHost) DnsmasqRevert(_ context.Context, flavor string) (hostops.DnsmasqResult, error) {
	f.calls = append(f.calls, "dnsmasq-revert "+flavor)
	p, _ := hostops.DnsmasqPath(flavor)
	changed := f.dropIns[flavor]
	delete(f.dropIns, flavor)
	return hostops.DnsmasqResult{Path: p, Changed: changed}, nil
}

func newTestDNSSetup(t *testing.T, detected hostops.HostResolver, bridgeUp bool) (*dnsSetup, *fakeResolverHost, *bytes.Buffer) {
	t.Helper()
	state := t.TempDir()
	cfg := config.Defaults(config.Paths{StateDir: state})
	h := &fakeResolverHost{links: map[string]netip.AddrPort{}, dropIns: map[string]bool{}}
	var out bytes.Buffer
	return &dnsSetup{
		cfg: cfg, stateDir: state, out: &out, host: h, forced: "auto",
		detect:       func() hostops.HostResolver { return detected },
		bridgeExists: func(string) bool { return bridgeUp },
	}, h, &out
}

var resolvedHost = hostops.HostResolver{Kind: hostops.ResolverResolved, Why: "systemd-resolved (test)"}

func TestDNSSetupPrint(t *testing.T) {
	tests := []struct {
		name     string
		detected hostops.HostResolver
		forced   string
		want     []string
	}{
		{"resolved", resolvedHost, "auto", []string{"resolvectl dns banger0 172.16.0.1:42069", "resolvectl domain banger0 ~vm", "Bridge banger0 does not exist yet"}},
		{"dnsmasq", hostops.HostResolver{Kind: hostops.ResolverDnsmasq, Flavor: hostops.DnsmasqPlain, Why: "x"}, "auto", []string{"/etc/dnsmasq.d/banger.conf", "server=/vm/127.0.0.1#42069", "restart dnsmasq"}},
		{"networkmanager", hostops.HostResolver{Kind: hostops.ResolverDnsmasq, Flavor: hostops.DnsmasqNetworkManager, Why: "x"}, "auto", []string{"/etc/NetworkManager/dnsmasq.d/banger.conf", "reload NetworkManager"}},
		{"forced dnsmasq", resolvedHost, hostops.ResolverDnsmasq, []string{"/etc/dnsmasq.d/banger.conf"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, h, out := newTestDNSSetup(t, tt.detected, false)
			s.forced = tt.forced
			if err := s.print(); err != nil {
				t.Fatal(err)
			}
			for _, w := range append(tt.want, "dig @127.0.0.1 -p 42069 NAME.vm") {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if len(h.calls) != 0 {
				t.Fatalf("print ran privileged ops: %v", h.calls)
			}
			if _, err := os.Stat(filepath.Join(s.stateDir, hostops.ResolverSetupFile)); !os.IsNotExist(err) {
				t.Fatalf("print wrote a record: %v", err)
			}
		})
	}
}

func TestDNSSetupApplyRevertResolved(t *testing.T) {
	ctx := context.Background()
	s, h, out := newTestDNSSetup(t, resolvedHost, false)
	if err := s.apply(ctx); err != nil {
		t.Fatal(err)
	}
	if len(h.calls) != 0 || !strings.Contains(out.String(), "does not exist yet") {
		t.Fatalf("apply without bridge: calls %v\n%s", h.calls, out)
	}
	rec, ok, err := hostops.LoadResolverSetup(s.stateDir)
	if err != nil || !ok || rec.Resolver != hostops.ResolverResolved || rec.Bridge != "banger0" || rec.Addr != "172.16.0.1:42069" {
		t.Fatalf("record %+v %v %v", rec, ok, err)
	}
	s.bridgeExists = func(string) bool { return true }
	if err := s.apply(ctx); err != nil {
		t.Fatal(err)
	}
	if h.links["banger0"].String() != "172.16.0.1:42069" {
		t.Fatalf("link settings %v", h.links)
	}
	if err := s.revert(ctx); err != nil {
		t.Fatal(err)
	}
	if len(h.links) != 0 || !slices.Equal(h.calls, []string{"link-apply banger0 172.16.0.1:42069", "link-revert banger0"}) {
		t.Fatalf("after revert: links %v calls %v", h.links, h.calls)
	}
	if _, ok, _ := hostops.LoadResolverSetup(s.stateDir); ok {
		t.Fatal("record left after revert")
	}
}

func TestDNSSetupApplyRevertDnsmasq(t *testing.T) {
	ctx := context.Background()
	s, h, out := newTestDNSSetup(t, hostops.HostResolver{Kind: hostops.ResolverDnsmasq, Flavor: hostops.DnsmasqNetworkManager, Why: "x"}, true)
	if err := s.apply(ctx); err != nil {
		t.Fatal(err)
	}
	if !h.dropIns[hostops.DnsmasqNetworkManager] || !strings.Contains(out.String(), "Wrote: /etc/NetworkManager/dnsmasq.d/banger.conf") {
		t.Fatalf("apply: %v\n%s", h.dropIns, out)
	}
	// The record, not a new detection, decides what revert undoes.
	s.detect = func() hostops.HostResolver { return resolvedHost }
	if err := s.revert(ctx); err != nil {
		t.Fatal(err)
	}
	want := []string{"dnsmasq-apply networkmanager 127.0.0.1:42069", "dnsmasq-revert networkmanager"}
	if len(h.dropIns) != 0 || !slices.Equal(h.calls, want) {
		t.Fatalf("calls %v, want %v", h.calls, want)
	}
}

// TestDNSSetupSaysWhenPortTaken: with banger's port held by another
// process, dns setup does not claim banger answers there.
func TestDNSSetupSaysWhenPortTaken(t *testing.T) {
	s, _, out := newTestDNSSetup(t, resolvedHost, true)
	s.problem = "127.0.0.1:42069 taken by another process; NAME.vm won't resolve through it — set dns_listen_addr to a free address"
	if err := s.print(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "Warning: "+s.problem) || strings.Contains(out.String(), "banger's DNS server answers") {
		t.Fatalf("print with the port taken:\n%s", out)
	}
	out.Reset()
	if err := s.apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "Warning: "+s.problem) {
		t.Fatalf("apply with the port taken:\n%s", out)
	}
}
