package network

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// inNetns moves the calling test goroutine's thread into a fresh network
// namespace for the rest of the test. The thread stays locked, so the Go
// runtime discards it when the test ends; everything created in the
// namespace goes away with it. Subtests run on other threads: keep
// privileged bodies flat.
func inNetns(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace with bridges, taps and nftables")
	}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatalf("saving network namespace: %v", err)
	}
	ns, err := netns.New()
	if err != nil {
		orig.Close()
		t.Fatalf("creating network namespace: %v", err)
	}
	t.Cleanup(func() {
		if err := netns.Set(orig); err != nil {
			t.Errorf("restoring network namespace: %v", err)
		}
		ns.Close()
		orig.Close()
	})
}

// mustVeth adds a veth pair name/name+"p" (dummy interfaces need a module
// that is not always there) with cidr on name.
func mustVeth(t *testing.T, name, cidr string) netlink.Link {
	t.Helper()
	d := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}
	if err := netlink.LinkAdd(d); err != nil {
		t.Fatalf("adding veth %s: %v", name, err)
	}
	l, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if cidr != "" {
		a, err := netlink.ParseAddr(cidr)
		if err != nil {
			t.Fatal(err)
		}
		if err := netlink.AddrAdd(l, a); err != nil {
			t.Fatalf("adding %s to %s: %v", cidr, name, err)
		}
	}
	if err := netlink.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
	return l
}

// foreignTable creates an unrelated nftables table that banger must not touch.
func foreignTable(t *testing.T) {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	tb := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: "keepme"})
	c.AddChain(&nftables.Chain{Name: "mine", Table: tb})
	if err := c.Flush(); err != nil {
		t.Fatalf("creating foreign table: %v", err)
	}
}

func tableNames(t *testing.T) []string {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	ts, err := c.ListTables()
	if err != nil {
		t.Fatalf("listing tables: %v", err)
	}
	var out []string
	for _, tb := range ts {
		out = append(out, fmt.Sprintf("%s %s", familyName(tb.Family), tb.Name))
	}
	slices.Sort(out)
	return out
}

func linkNames(t *testing.T) []string {
	t.Helper()
	ls, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range ls {
		out = append(out, l.Attrs().Name)
	}
	slices.Sort(out)
	return out
}

func readForward(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(ipForwardPS)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func TestPrivilegedLifecycle(t *testing.T) {
	inNetns(t)
	mustVeth(t, "veth0", "192.168.77.1/24")
	foreignTable(t)
	before := tableNames(t)

	const bridge = "bangert0"
	const uid, gid = 4242, 4343
	prefix := netip.MustParsePrefix("10.77.0.0/24")
	gw := Gateway(prefix)
	if err := CheckCIDR(prefix, bridge); err != nil {
		t.Fatalf("CheckCIDR on a fresh namespace: %v", err)
	}
	created, err := EnsureBridge(bridge, gw, prefix, uid)
	if err != nil || !created {
		t.Fatalf("EnsureBridge = %v, %v; want created", created, err)
	}
	created, err = EnsureBridge(bridge, gw, prefix, uid)
	if err != nil || created {
		t.Fatalf("second EnsureBridge = %v, %v; want existing", created, err)
	}
	br, err := netlink.LinkByName(bridge)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := br.(*netlink.Bridge); !ok || br.Attrs().Flags&net.FlagUp == 0 || br.Attrs().Alias != "banger uid=4242" {
		t.Fatalf("bridge %s is %T flags %v alias %q; want an up bridge with alias %q", bridge, br, br.Attrs().Flags, br.Attrs().Alias, "banger uid=4242")
	}
	addrs, _ := netlink.AddrList(br, netlink.FAMILY_V4)
	if len(addrs) != 1 || addrs[0].IPNet.String() != "10.77.0.1/24" {
		t.Fatalf("bridge addresses = %v; want exactly 10.77.0.1/24", addrs)
	}
	if err := CheckCIDR(prefix, bridge); err != nil {
		t.Fatalf("CheckCIDR must ignore banger's own bridge: %v", err)
	}

	var taps []string
	var guests []netip.Addr
	used := map[netip.Addr]bool{}
	for i := range 10 {
		name, err := TapName(fmt.Sprintf("vm%02d", i))
		if err != nil {
			t.Fatal(err)
		}
		if err := CreateTap(name, bridge, uid, gid); err != nil {
			t.Fatalf("CreateTap(%s): %v", name, err)
		}
		ip, err := NextFree(prefix, gw, used)
		if err != nil {
			t.Fatal(err)
		}
		used[ip] = true
		taps, guests = append(taps, name), append(guests, ip)
	}
	// Reusing banger's own tap is idempotent.
	if err := CreateTap(taps[0], bridge, uid, gid); err != nil {
		t.Fatalf("CreateTap on banger's existing tap: %v", err)
	}
	for _, name := range taps {
		l, err := netlink.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		tp, ok := l.(*netlink.Tuntap)
		if !ok || tp.Mode != netlink.TUNTAP_MODE_TAP {
			t.Fatalf("%s is %T, want a tap", name, l)
		}
		if tp.Owner != uid || tp.Group != gid || tp.NonPersist {
			t.Errorf("%s owner %d group %d nonpersist %v; want %d %d persistent", name, tp.Owner, tp.Group, tp.NonPersist, uid, gid)
		}
		if l.Attrs().MasterIndex != br.Attrs().Index || l.Attrs().Flags&net.FlagUp == 0 || l.Attrs().Alias != TapAlias {
			t.Errorf("%s master %d up %v alias %q; want master %d, up, alias %q", name, l.Attrs().MasterIndex, l.Attrs().Flags&net.FlagUp != 0, l.Attrs().Alias, br.Attrs().Index, TapAlias)
		}
		if _, _, err := TapCounters(name); err != nil {
			t.Errorf("TapCounters(%s): %v", name, err)
		}
	}

	if err := os.WriteFile(ipForwardPS, []byte("0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	changed, err := NATEnsure(bridge, prefix, uid)
	if err != nil || !changed {
		t.Fatalf("NATEnsure = %v, %v; want forwarding turned on", changed, err)
	}
	if readForward(t) != "1" {
		t.Fatal("ip_forward is not 1 after NATEnsure")
	}
	if changed, err = NATEnsure(bridge, prefix, uid); err != nil || changed {
		t.Fatalf("second NATEnsure = %v, %v; want no change", changed, err)
	}
	natted := []netip.Addr{guests[1], guests[4], guests[7], guests[8]}
	for _, a := range natted {
		if err := NATAdd(bridge, a, uid); err != nil {
			t.Fatalf("NATAdd(%s): %v", a, err)
		}
	}
	if err := NATAdd(bridge, guests[4], uid); err != nil {
		t.Fatalf("adding a member twice: %v", err)
	}
	// Re-ensuring keeps the members and does not duplicate rules.
	if _, err := NATEnsure(bridge, prefix, uid); err != nil {
		t.Fatal(err)
	}
	members, err := NATMembers(bridge)
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(members, netip.Addr.Compare)
	if !slices.Equal(members, natted) {
		t.Fatalf("NAT members = %v; want %v", members, natted)
	}
	c, _ := nftables.New()
	tb := ipTable(NATTableName(bridge))
	for _, ch := range []struct {
		name string
		n    int
	}{{chainPost, 1}, {chainFwd, 2}} {
		rules, err := c.GetRules(tb, &nftables.Chain{Name: ch.name, Table: tb})
		if err != nil || len(rules) != ch.n {
			t.Fatalf("chain %s has %d rules (%v); want %d", ch.name, len(rules), err, ch.n)
		}
	}

	// Delete all "VMs" at once: taps, then NAT by address for every guest,
	// including ones never added.
	for _, name := range taps {
		if err := DeleteTap(name, uid); err != nil {
			t.Fatalf("DeleteTap(%s): %v", name, err)
		}
	}
	for _, a := range guests {
		if err := NATRemove(bridge, a, uid); err != nil {
			t.Fatalf("NATRemove(%s): %v", a, err)
		}
	}
	if m, err := NATMembers(bridge); err != nil || len(m) != 0 {
		t.Fatalf("NAT members after removal = %v, %v; want none", m, err)
	}
	if err := NATTeardown(uid, []string{bridge}); err != nil {
		t.Fatal(err)
	}
	if err := DeleteBridge(bridge, uid); err != nil {
		t.Fatal(err)
	}
	// Everything is idempotent once gone.
	if err := NATTeardown(uid, nil); err != nil {
		t.Errorf("second NATTeardown: %v", err)
	}
	if err := NATRemove(bridge, guests[0], uid); err != nil {
		t.Errorf("NATRemove without table: %v", err)
	}
	if err := DeleteTap(taps[0], uid); err != nil {
		t.Errorf("DeleteTap of a missing tap: %v", err)
	}
	if err := DeleteBridge(bridge, uid); err != nil {
		t.Errorf("DeleteBridge of a missing bridge: %v", err)
	}
	if m, err := NATMembers(bridge); err != nil || len(m) != 0 {
		t.Errorf("NATMembers without table = %v, %v", m, err)
	}
	if err := NATAdd(bridge, guests[0], uid); err == nil || !strings.Contains(err.Error(), "not set up") {
		t.Errorf("NATAdd without table = %v; want a 'not set up' error", err)
	}

	if got, want := linkNames(t), []string{"lo", "veth0", "veth0p"}; !slices.Equal(got, want) {
		t.Errorf("links after teardown = %v; want %v", got, want)
	}
	if got := tableNames(t); !slices.Equal(got, before) || !slices.Contains(got, "ip keepme") {
		t.Errorf("tables after teardown = %v; want %v", got, before)
	}
	d, err := netlink.LinkByName("veth0")
	if err != nil {
		t.Fatal(err)
	}
	if a, _ := netlink.AddrList(d, netlink.FAMILY_V4); len(a) != 1 || a[0].IPNet.String() != "192.168.77.1/24" {
		t.Errorf("veth0 addresses changed: %v", a)
	}
}

func TestPrivilegedForeignTapsLeftAlone(t *testing.T) {
	inNetns(t)
	const bridge = "bangert1"
	prefix := netip.MustParsePrefix("10.78.0.0/24")
	if _, err := EnsureBridge(bridge, Gateway(prefix), prefix, 0); err != nil {
		t.Fatal(err)
	}
	// A tap someone else made under a banger name, owned by the same uid.
	foreign := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: "bgt-foreign"}, Mode: netlink.TUNTAP_MODE_TAP, Flags: netlink.TUNTAP_NO_PI}
	if err := netlink.LinkAdd(foreign); err != nil {
		t.Fatal(err)
	}
	mustVeth(t, "bgt-veth", "")
	// banger's mark but another user's tap.
	if err := createMarkedTap("bgt-other", 1001, 1001); err != nil {
		t.Fatal(err)
	}

	cases := []struct{ name, want string }{
		{"bgt-foreign", "lacks banger's mark"},
		{"bgt-veth", "type veth"},
		{"bgt-other", "owned by uid 1001"},
	}
	for _, tc := range cases {
		err := CreateTap(tc.name, bridge, 0, 0)
		if !errors.Is(err, ErrNotBanger) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "left alone") {
			t.Errorf("CreateTap(%s) = %v; want ErrNotBanger mentioning %q and 'left alone'", tc.name, err, tc.want)
		}
	}
	for _, name := range []string{"bgt-foreign", "bgt-veth"} {
		if err := DeleteTap(name, 0); !errors.Is(err, ErrNotBanger) {
			t.Errorf("DeleteTap(%s) = %v; want ErrNotBanger", name, err)
		}
		l, err := netlink.LinkByName(name)
		if err != nil {
			t.Fatalf("%s was removed: %v", name, err)
		}
		if l.Attrs().MasterIndex != 0 || l.Attrs().Alias != "" {
			t.Errorf("%s was modified: master %d alias %q", name, l.Attrs().MasterIndex, l.Attrs().Alias)
		}
	}
	if err := CreateTap("bgt-x", "nosuchbr", 0, 0); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("CreateTap on a missing bridge = %v", err)
	}
	if err := CreateTap("bgt-y", "bgt-veth", 0, 0); err == nil || !strings.Contains(err.Error(), "not a bridge") {
		t.Errorf("CreateTap on a non-bridge = %v", err)
	}
	if _, err := netlink.LinkByName("bgt-y"); err == nil {
		t.Error("bgt-y was created although its bridge was refused")
	}
	if _, err := EnsureBridge("bgt-veth", netip.MustParseAddr("10.79.0.1"), netip.MustParsePrefix("10.79.0.0/24"), 0); !errors.Is(err, ErrNotBanger) {
		t.Errorf("EnsureBridge over a veth = %v; want ErrNotBanger", err)
	}
	if err := DeleteBridge("bgt-veth", 0); !errors.Is(err, ErrNotBanger) {
		t.Errorf("DeleteBridge of a veth = %v; want ErrNotBanger", err)
	}
	if _, _, err := TapCounters("bgt-missing"); err == nil {
		t.Error("TapCounters of a missing tap succeeded")
	}
}

func TestPrivilegedCheckCIDR(t *testing.T) {
	inNetns(t)
	d := mustVeth(t, "vpn0", "10.99.0.1/16")
	if err := netlink.RouteAdd(&netlink.Route{LinkIndex: d.Attrs().Index, Dst: &net.IPNet{IP: net.IPv4(10, 200, 0, 0), Mask: net.CIDRMask(16, 32)}}); err != nil {
		t.Fatal(err)
	}
	if err := netlink.RouteAdd(&netlink.Route{LinkIndex: d.Attrs().Index, Table: 51820, Dst: &net.IPNet{IP: net.IPv4(10, 210, 0, 0), Mask: net.CIDRMask(16, 32)}}); err != nil {
		t.Fatal(err)
	}
	for _, dst := range []*net.IPNet{
		{IP: net.IPv4(0, 0, 0, 0), Mask: net.CIDRMask(0, 32)},
		{IP: net.IPv4(0, 0, 0, 0), Mask: net.CIDRMask(1, 32)},
		{IP: net.IPv4(128, 0, 0, 0), Mask: net.CIDRMask(1, 32)},
	} {
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: d.Attrs().Index, Dst: dst}); err != nil {
			t.Fatalf("adding route %s: %v", dst, err)
		}
	}
	const bridge = "bangert2"
	if _, err := EnsureBridge(bridge, netip.MustParseAddr("10.50.0.1"), netip.MustParsePrefix("10.50.0.0/24"), 0); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		cidr, bridge, want string
	}{
		{"10.99.5.0/24", bridge, "overlaps 10.99.0.0/16 on interface vpn0"},
		{"10.0.0.0/8", bridge, "overlaps 10.99.0.0/16 on interface vpn0"},
		{"10.200.3.0/24", bridge, "overlaps route 10.200.0.0/16 dev vpn0"},
		{"10.210.3.0/24", bridge, "in table 51820"},
		{"10.50.0.0/24", "bangerother", "on interface " + bridge},
		{"10.50.0.0/31", bridge, "too small"},
		{"10.50.0.0/24", bridge, ""},
		{"10.51.0.0/24", bridge, ""},
		{"192.168.200.0/24", bridge, ""}, // under 128.0.0.0/1 and the default route
	}
	for _, tt := range tests {
		err := CheckCIDR(netip.MustParsePrefix(tt.cidr), tt.bridge)
		if tt.want == "" {
			if err != nil {
				t.Errorf("CheckCIDR(%s, %s) = %v; want ok", tt.cidr, tt.bridge, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("CheckCIDR(%s, %s) = %v; want error containing %q", tt.cidr, tt.bridge, err, tt.want)
		}
	}
}

func TestPrivilegedForwardPolicy(t *testing.T) {
	inNetns(t)
	const bridge = "bangert3"
	ok, detail, fix, err := ForwardPolicy(bridge)
	if err != nil || !ok || fix != "" {
		t.Fatalf("ForwardPolicy on an empty ruleset = %v, %q, %q, %v; want ok", ok, detail, fix, err)
	}
	// banger's own table never counts.
	if _, err := NATEnsure(bridge, netip.MustParsePrefix("10.80.0.0/24"), 0); err != nil {
		t.Fatal(err)
	}
	c, _ := nftables.New()
	drop := nftables.ChainPolicyDrop
	filter := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: "filter"})
	fwd := c.AddChain(&nftables.Chain{Name: "FORWARD", Table: filter, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookRef(unix.NF_INET_FORWARD), Priority: nftables.ChainPriorityRef(0), Policy: &drop})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	ok, detail, fix, err = ForwardPolicy(bridge)
	if err != nil || ok || !strings.Contains(detail, "chain FORWARD in table ip filter has policy drop") ||
		!strings.Contains(fix, "iptables -I FORWARD -i bangert3 -j ACCEPT") {
		t.Fatalf("ForwardPolicy with a dropping FORWARD = %v, %q, %q, %v", ok, detail, fix, err)
	}

	// Docker's layout: FORWARD jumps to DOCKER-USER, where the fix goes.
	user := c.AddChain(&nftables.Chain{Name: "DOCKER-USER", Table: filter})
	c.AddRule(&nftables.Rule{Table: filter, Chain: fwd, Exprs: []expr.Any{&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictJump, Chain: "DOCKER-USER"}}})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	_, _, fix, _ = ForwardPolicy(bridge)
	if !strings.Contains(fix, "iptables -I DOCKER-USER -i bangert3 -j ACCEPT") || !strings.Contains(fix, "iptables -I DOCKER-USER -o bangert3 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT") {
		t.Fatalf("fix with DOCKER-USER = %q", fix)
	}
	// Only the outbound half: still not ok.
	rules := forwardRules(bridge, netip.MustParsePrefix("10.80.0.0/24"))
	c.AddRule(&nftables.Rule{Table: filter, Chain: user, Exprs: append(slices.Clone(rules[0].exprs[:2]), rules[0].exprs[5])})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if ok, _, _, _ := ForwardPolicy(bridge); ok {
		t.Fatal("ForwardPolicy ok without a rule for the return traffic")
	}
	c.AddRule(&nftables.Rule{Table: filter, Chain: user, Exprs: append(slices.Clone(rules[1].exprs[:2]), rules[1].exprs[5:]...)})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	ok, detail, fix, err = ForwardPolicy(bridge)
	if err != nil || !ok || fix != "" {
		t.Fatalf("ForwardPolicy after the fix = %v, %q, %q, %v; want ok", ok, detail, fix, err)
	}

	// A native inet table gets nft commands.
	inet := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: "fw"})
	c.AddChain(&nftables.Chain{Name: "fwd", Table: inet, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookRef(unix.NF_INET_FORWARD), Priority: nftables.ChainPriorityRef(0), Policy: &drop})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	ok, _, fix, _ = ForwardPolicy(bridge)
	if ok || !strings.Contains(fix, `nft insert rule inet fw fwd iifname "bangert3" accept`) ||
		!strings.Contains(fix, `nft insert rule inet fw fwd oifname "bangert3" ct state established,related accept`) {
		t.Fatalf("fix for inet table = %v %q", ok, fix)
	}
}

// The bridge dump is filtered by the kernel (bridgeLinks): it answers with
// the bridges alone, and OwnedBridges keeps those carrying the uid's record.
func TestPrivilegedOwnedBridges(t *testing.T) {
	inNetns(t)
	mustVeth(t, "veth0", "192.168.77.1/24")
	const uid, gid = 4242, 4343
	mine, other := netip.MustParsePrefix("10.77.0.0/24"), netip.MustParsePrefix("10.78.0.0/24")
	if _, err := EnsureBridge("bangert0", Gateway(mine), mine, uid); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureBridge("bangert1", Gateway(other), other, uid+1); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "plainbr"}}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		name, err := TapName(fmt.Sprintf("vm%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if err := CreateTap(name, "bangert0", uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	links, err := bridgeLinks()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range links {
		names = append(names, l.Type()+" "+l.Attrs().Name)
	}
	slices.Sort(names)
	if want := []string{"bridge bangert0", "bridge bangert1", "bridge plainbr"}; !slices.Equal(names, want) {
		t.Fatalf("bridgeLinks = %q; want %q (of %q)", names, want, linkNames(t))
	}
	got, err := OwnedBridges(uid)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Name != "bangert0" || !slices.Equal(got[0].Addrs, []netip.Prefix{netip.MustParsePrefix("10.77.0.1/24")}) {
		t.Fatalf("OwnedBridges(%d) = %v; want bangert0 with 10.77.0.1/24", uid, got)
	}
}
