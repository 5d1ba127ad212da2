package network

import (
	"errors"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading golden file (run with -update to create it): %v", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from golden file (run with -update if intended):\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

func TestTapName(t *testing.T) {
	tests := []struct {
		id, want, err string
	}{
		{"abc123", "bgt-abc123", ""},
		{"0123456789a", "bgt-0123456789a", ""},
		{"0123456789ab", "", "at most 15"},
		{"", "", "empty vm id"},
		{"a/b", "", "contains"},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			got, err := TapName(tt.id)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("TapName(%q) = %q, %v; want error containing %q", tt.id, got, err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("TapName(%q) = %q, %v; want %q", tt.id, got, err, tt.want)
			}
		})
	}
}

func TestMACFor(t *testing.T) {
	tests := []struct{ ip, want string }{
		{"172.16.0.2", "02:fc:ac:10:00:02"},
		{"10.0.255.254", "02:fc:0a:00:ff:fe"},
		{"::ffff:192.168.1.1", "02:fc:c0:a8:01:01"},
	}
	for _, tt := range tests {
		got := MACFor(netip.MustParseAddr(tt.ip))
		if got != tt.want {
			t.Errorf("MACFor(%s) = %s, want %s", tt.ip, got, tt.want)
		}
	}
	// locally administered, unicast
	if b := MACFor(netip.MustParseAddr("1.2.3.4")); b[:2] != "02" {
		t.Errorf("first octet %s is not locally administered unicast", b[:2])
	}
}

func TestGatewayBroadcastMask(t *testing.T) {
	tests := []struct{ prefix, gw, bcast, mask string }{
		{"172.16.0.0/24", "172.16.0.1", "172.16.0.255", "255.255.255.0"},
		{"172.16.0.77/24", "172.16.0.1", "172.16.0.255", "255.255.255.0"},
		{"10.1.0.0/20", "10.1.0.1", "10.1.15.255", "255.255.240.0"},
		{"192.168.9.4/30", "192.168.9.5", "192.168.9.7", "255.255.255.252"},
	}
	for _, tt := range tests {
		p := netip.MustParsePrefix(tt.prefix)
		if g := Gateway(p).String(); g != tt.gw {
			t.Errorf("Gateway(%s) = %s, want %s", p, g, tt.gw)
		}
		if b := Broadcast(p).String(); b != tt.bcast {
			t.Errorf("Broadcast(%s) = %s, want %s", p, b, tt.bcast)
		}
		if m := Mask(p); m != tt.mask {
			t.Errorf("Mask(%s) = %s, want %s", p, m, tt.mask)
		}
	}
}

func TestNextFree(t *testing.T) {
	a := netip.MustParseAddr
	p := netip.MustParsePrefix("172.16.0.0/29") // .1-.6 hosts
	tests := []struct {
		name   string
		prefix netip.Prefix
		bridge netip.Addr
		used   []string
		want   string
		err    string
	}{
		{"first after gateway", p, a("172.16.0.1"), nil, "172.16.0.2", ""},
		{"skips used", p, a("172.16.0.1"), []string{"172.16.0.2", "172.16.0.3"}, "172.16.0.4", ""},
		{"fills hole", p, a("172.16.0.1"), []string{"172.16.0.2", "172.16.0.4"}, "172.16.0.3", ""},
		{"bridge not first", p, a("172.16.0.6"), nil, "172.16.0.1", ""},
		{"never broadcast", p, a("172.16.0.1"), []string{"172.16.0.2", "172.16.0.3", "172.16.0.4", "172.16.0.5"}, "172.16.0.6", ""},
		{"full", p, a("172.16.0.1"), []string{"172.16.0.2", "172.16.0.3", "172.16.0.4", "172.16.0.5", "172.16.0.6"}, "", "no free guest address"},
		{"slash30 one guest", netip.MustParsePrefix("10.0.0.0/30"), a("10.0.0.1"), nil, "10.0.0.2", ""},
		{"slash31 too small", netip.MustParsePrefix("10.0.0.0/31"), a("10.0.0.1"), nil, "", "too small for one guest"},
		{"ipv6 refused", netip.MustParsePrefix("fd00::/64"), a("fd00::1"), nil, "", "not IPv4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			used := map[netip.Addr]bool{}
			for _, u := range tt.used {
				used[a(u)] = true
			}
			got, err := NextFree(tt.prefix, tt.bridge, used)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("NextFree = %v, %v; want error containing %q", got, err, tt.err)
				}
				return
			}
			if err != nil || got.String() != tt.want {
				t.Fatalf("NextFree = %v, %v; want %s", got, err, tt.want)
			}
		})
	}
}

func TestKernelIPArgGolden(t *testing.T) {
	a := netip.MustParseAddr
	lines := []string{
		KernelIPArg(a("172.16.0.2"), a("172.16.0.1"), netip.MustParsePrefix("172.16.0.0/24"), "dev", a("1.1.1.1")),
		KernelIPArg(a("10.1.3.7"), a("10.1.0.1"), netip.MustParsePrefix("10.1.0.0/20"), "build-box", a("10.1.0.1")),
		KernelIPArg(a("10.9.0.2"), a("10.9.0.1"), netip.MustParsePrefix("10.9.0.0/30"), "tiny", netip.Addr{}),
	}
	golden(t, "kernel-ip.golden", strings.Join(lines, "\n")+"\n")
}

func TestRenderRulesetGolden(t *testing.T) {
	golden(t, "ruleset.golden", RenderRuleset("banger0", netip.MustParsePrefix("172.16.0.0/24"), 1000))
}

func TestRenderRulesetFollowsArguments(t *testing.T) {
	got := RenderRuleset("bangerX", netip.MustParsePrefix("10.20.30.0/23"), 4242)
	for _, want := range []string{"table ip banger-bangerX {", `comment "banger uid=4242"`, `oifname != "bangerX" masquerade`, `iifname "bangerX" ip saddr 10.20.30.0/23 accept`, `ip daddr 10.20.30.0/23`} {
		if !strings.Contains(got, want) {
			t.Errorf("ruleset lacks %q:\n%s", want, got)
		}
	}
}

func TestValidateIfName(t *testing.T) {
	for _, ok := range []string{"banger0", "bgt-abc", "a_b-c.d", "123456789012345"} {
		if err := ValidateIfName(ok); err != nil {
			t.Errorf("ValidateIfName(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", "1234567890123456", "a b", "a/b", "a:b", "tab\t", "é"} {
		if err := ValidateIfName(bad); err == nil {
			t.Errorf("ValidateIfName(%q) accepted", bad)
		}
	}
}

func TestNftErrUnavailable(t *testing.T) {
	err := nftErr("installing", errors.Join(errors.New("conn.Receive"), unix.EPROTONOSUPPORT))
	if !strings.Contains(err.Error(), "nftables unavailable") || !strings.Contains(err.Error(), "VMs without NAT still work") {
		t.Errorf("got %v", err)
	}
	err = nftErr("installing", unix.EINVAL)
	if strings.Contains(err.Error(), "unavailable") {
		t.Errorf("EINVAL reported as unavailable: %v", err)
	}
}

func TestClassify(t *testing.T) {
	meta := func(k expr.MetaKey) expr.Any { return &expr.Meta{Key: k, Register: 1} }
	cmpName := func(n string) expr.Any { return &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(n)} }
	accept := &expr.Verdict{Kind: expr.VerdictAccept}
	ct := []expr.Any{&expr.Ct{Key: expr.CtKeySTATE, Register: 1}, &expr.Bitwise{}, &expr.Cmp{Op: expr.CmpOpNeq}}
	tests := []struct {
		name    string
		exprs   []expr.Any
		dir     uint32
		accepts bool
		jump    string
	}{
		{"iif accept", []expr.Any{meta(expr.MetaKeyIIFNAME), cmpName("banger0"), &expr.Counter{}, accept}, unix.NFT_META_IIFNAME, true, ""},
		{"oif stateful accept", append(append([]expr.Any{meta(expr.MetaKeyOIFNAME), cmpName("banger0")}, ct...), accept), unix.NFT_META_OIFNAME, true, ""},
		{"iif stateful is not enough", append(append([]expr.Any{meta(expr.MetaKeyIIFNAME), cmpName("banger0")}, ct...), accept), unix.NFT_META_IIFNAME, false, ""},
		{"other bridge", []expr.Any{meta(expr.MetaKeyIIFNAME), cmpName("docker0"), accept}, 0, false, ""},
		{"narrowed by port", []expr.Any{meta(expr.MetaKeyIIFNAME), cmpName("banger0"), &expr.Payload{Len: 2}, &expr.Cmp{Op: expr.CmpOpEq, Data: []byte{0, 22}}, accept}, unix.NFT_META_IIFNAME, false, ""},
		{"jump", []expr.Any{&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictJump, Chain: "DOCKER-USER"}}, 0, false, "DOCKER-USER"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, acc, jump := classify(tt.exprs, "banger0")
			if acc != tt.accepts || jump != tt.jump || (tt.accepts && dir != tt.dir) {
				t.Errorf("classify = %d, %v, %q; want %d, %v, %q", dir, acc, jump, tt.dir, tt.accepts, tt.jump)
			}
		})
	}
}

func TestCapacity(t *testing.T) {
	for _, tt := range []struct {
		prefix, bridge string
		want           int
	}{
		{"172.16.0.0/24", "172.16.0.1", 253},
		{"172.16.0.0/22", "172.16.0.1", 1021},
		{"172.16.0.0/28", "172.16.0.1", 13},
		{"172.16.0.0/30", "172.16.0.1", 1},
		{"172.16.0.0/24", "10.0.0.1", 254},
		{"172.16.0.0/31", "172.16.0.1", 0},
	} {
		if got := Capacity(netip.MustParsePrefix(tt.prefix), netip.MustParseAddr(tt.bridge)); got != tt.want {
			t.Errorf("Capacity(%s, %s) = %d, want %d", tt.prefix, tt.bridge, got, tt.want)
		}
	}
}
