package hostops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"banger/internal/network"
)

func TestNetOpsRefuseBadArguments(t *testing.T) {
	caller := Caller{UID: 1000, GID: 1000}
	tests := []struct {
		name, op, args, want string
	}{
		{"tap eth0", "create-tap", `{"name":"eth0","bridge":"banger0"}`, "tap \"eth0\" is not banger's"},
		{"tap uppercase", "create-tap", `{"name":"bgt-ABC","bridge":"banger0"}`, "is not banger's"},
		{"tap too long", "create-tap", `{"name":"bgt-0123456789ab","bridge":"banger0"}`, "is not banger's"},
		{"tap bare prefix", "delete-tap", `{"name":"bgt-"}`, "is not banger's"},
		{"tap on docker0", "create-tap", `{"name":"bgt-abc","bridge":"docker0"}`, "bridge \"docker0\" is not banger's"},
		{"owner from args", "create-tap", `{"name":"bgt-abc","bridge":"banger0","uid":0}`, "unknown field"},
		{"delete-tap with bridge", "delete-tap", `{"name":"bgt-abc","bridge":"banger0"}`, "only a name"},
		{"bridge docker0", "ensure-bridge", `{"name":"docker0","ip":"172.16.0.1","prefix":"172.16.0.0/24"}`, "is not banger's"},
		{"bridge too long", "ensure-bridge", `{"name":"banger0123456789","ip":"172.16.0.1","prefix":"172.16.0.0/24"}`, "at most 15"},
		{"bridge slash", "ensure-bridge", `{"name":"banger/0","ip":"172.16.0.1","prefix":"172.16.0.0/24"}`, "contains"},
		{"bridge ipv6", "ensure-bridge", `{"name":"banger0","ip":"fd00::1","prefix":"172.16.0.0/24"}`, "not an IPv4 address"},
		{"bridge ip outside", "ensure-bridge", `{"name":"banger0","ip":"172.16.1.1","prefix":"172.16.0.0/24"}`, "not a host address"},
		{"bridge ip network", "ensure-bridge", `{"name":"banger0","ip":"172.16.0.0","prefix":"172.16.0.0/24"}`, "not a host address"},
		{"prefix too small", "ensure-bridge", `{"name":"banger0","ip":"172.16.0.1","prefix":"172.16.0.0/31"}`, "too small"},
		{"prefix garbage", "nat-ensure", `{"bridge":"banger0","prefix":"nope"}`, "not a CIDR prefix"},
		{"delete docker0", "delete-bridge", `{"name":"docker0"}`, "is not banger's"},
		{"nat on docker0", "nat-ensure", `{"bridge":"docker0","prefix":"172.16.0.0/24"}`, "is not banger's"},
		{"nat-add ipv6", "nat-add", `{"addr":"::1"}`, "not an IPv4 address"},
		{"nat-add loopback", "nat-add", `{"addr":"127.0.0.1"}`, "not a unicast host address"},
		{"nat-remove empty", "nat-remove", `{"addr":""}`, "not an IPv4 address"},
		{"nat-teardown args", "nat-teardown", `{"table":"filter"}`, "unknown field"},
		{"not json", "nat-add", `nat please`, "bad arguments"},
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

func TestNetOpsRegistered(t *testing.T) {
	names := OpNames()
	for _, op := range []string{"ensure-bridge", "create-tap", "delete-tap", "nat-ensure", "nat-add", "nat-remove", "nat-teardown", "delete-bridge", "forward-policy"} {
		if !slices.Contains(names, op) {
			t.Errorf("op %s is not registered (have %v)", op, names)
		}
	}
}

// namedNetns creates a named network namespace, moves the test's (locked)
// thread into it, and removes it at the end. A named namespace lets the test
// check kernel state with `ip -n` and `ip netns exec ... nft`.
func namedNetns(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace with bridges, taps and nftables")
	}
	for _, tool := range []string{"ip", "nft", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (Debian packages iproute2, nftables, iptables): %v", tool, err)
		}
	}
	// iproute2 creates and deletes the namespace: it also prepares
	// /run/netns (a shared self-bind) the way every other `ip netns` user on
	// the host expects, so a netns package mount never races with it.
	name := fmt.Sprintf("bangertest-%d-%d", os.Getpid(), time.Now().UnixNano()%1000000)
	if _, err := Run(context.Background(), "ip", "netns", "add", name); err != nil {
		t.Fatalf("creating network namespace: %v", err)
	}
	t.Cleanup(func() {
		if _, err := Run(context.Background(), "ip", "netns", "del", name); err != nil {
			t.Errorf("deleting network namespace: %v", err)
		}
	})
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	ns, err := netns.GetFromName(name)
	if err != nil {
		orig.Close()
		t.Fatalf("opening network namespace %s: %v", name, err)
	}
	if err := netns.Set(ns); err != nil {
		ns.Close()
		orig.Close()
		t.Fatalf("entering network namespace %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := netns.Set(orig); err != nil {
			t.Errorf("restoring network namespace: %v", err)
		}
		ns.Close()
		orig.Close()
	})
	return name
}

func inNS(t *testing.T, ns string, args ...string) string {
	t.Helper()
	out, err := Run(context.Background(), "ip", append([]string{"netns", "exec", ns}, args...)...)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return string(out)
}

type ipLink struct {
	Name   string   `json:"ifname"`
	Master string   `json:"master"`
	Flags  []string `json:"flags"`
}

func links(t *testing.T, ns string) map[string]ipLink {
	t.Helper()
	out, err := Run(context.Background(), "ip", "-n", ns, "-j", "link", "show")
	if err != nil {
		t.Fatal(err)
	}
	var ls []ipLink
	if err := json.Unmarshal(out, &ls); err != nil {
		t.Fatalf("parsing ip -j link: %v", err)
	}
	m := map[string]ipLink{}
	for _, l := range ls {
		m[l.Name] = l
	}
	return m
}

// hostLinks renders what the ops may change about the namespace's links
// (name, kind, master, alias, tap owner, IPv4 addresses), leaving out
// what the kernel changes by itself (timers, carrier, IPv6 DAD).
func hostLinks(t *testing.T, ns string) string {
	t.Helper()
	var ls []struct {
		Name     string `json:"ifname"`
		Master   string `json:"master"`
		Alias    string `json:"ifalias"`
		LinkInfo struct {
			Kind string         `json:"info_kind"`
			Data map[string]any `json:"info_data"`
		} `json:"linkinfo"`
		Addrs []struct {
			Family string `json:"family"`
			Local  string `json:"local"`
			Len    int    `json:"prefixlen"`
		} `json:"addr_info"`
	}
	if err := json.Unmarshal([]byte(inNS(t, ns, "ip", "-j", "-d", "addr", "show")), &ls); err != nil {
		t.Fatalf("parsing ip -j -d addr: %v", err)
	}
	var b strings.Builder
	for _, l := range ls {
		fmt.Fprintf(&b, "%s kind=%s master=%s alias=%q owner=%v", l.Name, l.LinkInfo.Kind, l.Master, l.Alias, l.LinkInfo.Data["user"])
		for _, a := range l.Addrs {
			if a.Family == "inet" {
				fmt.Fprintf(&b, " %s/%d", a.Local, a.Len)
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

// natElems lists the members of bridge's NAT set, sorted.
func natElems(t *testing.T, ns, bridge string) []string {
	t.Helper()
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(inNS(t, ns, "nft", "-j", "list", "set", "ip", network.NATTableName(bridge), network.NATSet)), &doc); err != nil {
		t.Fatal(err)
	}
	var elems []string
	for _, o := range doc.Nftables {
		if raw, ok := o["set"]; ok {
			var s struct {
				Elem []string `json:"elem"`
			}
			if err := json.Unmarshal(raw, &s); err != nil {
				t.Fatal(err)
			}
			elems = s.Elem
		}
	}
	slices.Sort(elems)
	return elems
}

func squash(s string) string { return strings.Join(strings.Fields(s), " ") }

func TestNetOpsPrivilegedInProcess(t *testing.T) {
	ns := namedNetns(t)
	ctx := context.Background()
	c := New(Options{})
	if c.Mode() != "in-process" {
		t.Fatalf("mode %s; want in-process as root", c.Mode())
	}
	// Things that are not banger's and must survive.
	inNS(t, ns, "ip", "link", "add", "vpn0", "type", "veth", "peer", "name", "vpn0p")
	inNS(t, ns, "ip", "addr", "add", "10.66.0.1/16", "dev", "vpn0")
	inNS(t, ns, "nft", "add", "table", "inet", "keepme")
	inNS(t, ns, "nft", "add", "chain", "inet", "keepme", "c")

	const bridge = "bangert9"
	prefix := netip.MustParsePrefix("10.67.0.0/24")
	gw := network.Gateway(prefix)

	_, err := c.EnsureBridge(ctx, bridge, netip.MustParseAddr("10.66.1.1"), netip.MustParsePrefix("10.66.1.0/24"))
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "vpn0") {
		t.Fatalf("EnsureBridge on a subnet overlapping vpn0 = %v; want refused naming vpn0", err)
	}
	if _, err := c.EnsureBridge(ctx, "docker0", gw, prefix); !errors.Is(err, ErrRefused) {
		t.Fatalf("EnsureBridge(docker0) = %v; want refused", err)
	}
	created, err := c.EnsureBridge(ctx, bridge, gw, prefix)
	if err != nil || !created {
		t.Fatalf("EnsureBridge = %v, %v", created, err)
	}
	if created, err = c.EnsureBridge(ctx, bridge, gw, prefix); err != nil || created {
		t.Fatalf("second EnsureBridge = %v, %v", created, err)
	}

	taps := []string{"bgt-a1", "bgt-b2", "bgt-c3"}
	for _, tp := range taps {
		if err := c.CreateTap(ctx, tp, bridge); err != nil {
			t.Fatalf("CreateTap(%s): %v", tp, err)
		}
	}
	if err := c.CreateTap(ctx, "eth0", bridge); !errors.Is(err, ErrRefused) {
		t.Errorf("CreateTap(eth0) = %v; want refused", err)
	}
	if err := c.CreateTap(ctx, "bgt-d4", "docker0"); !errors.Is(err, ErrRefused) {
		t.Errorf("CreateTap on docker0 = %v; want refused", err)
	}
	if err := c.DeleteBridge(ctx, "docker0"); !errors.Is(err, ErrRefused) {
		t.Errorf("DeleteBridge(docker0) = %v; want refused", err)
	}
	// The tap always goes to the caller, whatever it asks for, and only
	// onto the caller's bridge.
	other := Caller{UID: 4242, GID: 4343}
	if _, err := dispatch(ctx, other, "create-tap", []byte(`{"name":"bgt-u1","bridge":"bangert9"}`)); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "belongs to uid 0, not 4242") {
		t.Fatalf("create-tap of uid 4242 on root's bridge = %v; want refused", err)
	}
	if _, err := dispatch(ctx, other, "ensure-bridge", []byte(`{"name":"bangert7","ip":"10.68.0.1","prefix":"10.68.0.0/24"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := dispatch(ctx, other, "create-tap", []byte(`{"name":"bgt-u1","bridge":"bangert7"}`)); err != nil {
		t.Fatal(err)
	}
	l, err := netlink.LinkByName("bgt-u1")
	if err != nil {
		t.Fatal(err)
	}
	if tp, ok := l.(*netlink.Tuntap); !ok || tp.Owner != 4242 || tp.Group != 4343 {
		t.Fatalf("bgt-u1 = %#v; want a tap owned by 4242:4343", l)
	}

	ls := links(t, ns)
	if !slices.Contains(ls[bridge].Flags, "UP") {
		t.Errorf("bridge flags %v; want UP", ls[bridge].Flags)
	}
	for _, tp := range taps {
		if ls[tp].Master != bridge || !slices.Contains(ls[tp].Flags, "UP") {
			t.Errorf("tap %s = %+v; want master %s and UP", tp, ls[tp], bridge)
		}
	}

	if _, err := c.NATEnsure(ctx, bridge, prefix); err != nil {
		t.Fatal(err)
	}
	if got, want := squash(inNS(t, ns, "nft", "list", "table", "ip", network.NATTableName(bridge))), squash(network.RenderRuleset(bridge, prefix, 0)); got != want {
		t.Fatalf("kernel ruleset differs from RenderRuleset:\n got: %s\nwant: %s", got, want)
	}
	guests := []netip.Addr{netip.MustParseAddr("10.67.0.2"), netip.MustParseAddr("10.67.0.3"), netip.MustParseAddr("10.67.0.4")}
	for _, g := range guests[:2] {
		if err := c.NATAdd(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	if elems := natElems(t, ns, bridge); !slices.Equal(elems, []string{"10.67.0.2", "10.67.0.3"}) {
		t.Fatalf("nat_guests = %v; want 10.67.0.2, 10.67.0.3", elems)
	}

	for _, tp := range taps {
		if err := c.DeleteTap(ctx, tp); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := dispatch(ctx, other, "delete-tap", []byte(`{"name":"bgt-u1"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := dispatch(ctx, other, "delete-bridge", []byte(`{"name":"bangert7"}`)); err != nil {
		t.Fatal(err)
	}
	for _, g := range guests {
		if err := c.NATRemove(ctx, g); err != nil {
			t.Fatalf("NATRemove(%s): %v", g, err)
		}
	}
	if err := c.NATTeardown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteBridge(ctx, bridge); err != nil {
		t.Fatal(err)
	}
	var names []string
	for n := range links(t, ns) {
		names = append(names, n)
	}
	slices.Sort(names)
	if want := []string{"lo", "vpn0", "vpn0p"}; !slices.Equal(names, want) {
		t.Errorf("links after teardown = %v; want %v", names, want)
	}
	if tables := squash(inNS(t, ns, "nft", "list", "tables")); tables != "table inet keepme" {
		t.Errorf("tables after teardown = %q; want only the foreign one", tables)
	}
	if out := inNS(t, ns, "ip", "-4", "-o", "addr", "show", "dev", "vpn0"); !strings.Contains(out, "10.66.0.1/16") {
		t.Errorf("vpn0 lost its address: %s", out)
	}
}

// TestNetOpsCrossUser plays a second user (uid 4242) and root against the
// network objects of uid 1000, through the ops as a sudo helper runs them:
// every attempt is refused on one line naming the op or object and the
// reason, and nothing on the host changes; 4242's teardown leaves 1000's
// NAT state whole.
func TestNetOpsCrossUser(t *testing.T) {
	ns := namedNetns(t)
	ctx := context.Background()
	a, b, root := Caller{UID: 1000, GID: 1000}, Caller{UID: 4242, GID: 4242}, Caller{}
	must := func(c Caller, op, args string) {
		t.Helper()
		if _, err := dispatch(ctx, c, op, []byte(args)); err != nil {
			t.Fatalf("uid %d %s %s: %v", c.UID, op, args, err)
		}
	}
	must(a, "ensure-bridge", `{"name":"bangerua","ip":"10.93.0.1","prefix":"10.93.0.0/24"}`)
	must(a, "create-tap", `{"name":"bgt-ua1","bridge":"bangerua"}`)
	must(a, "nat-ensure", `{"bridge":"bangerua","prefix":"10.93.0.0/24"}`)
	must(a, "nat-add", `{"addr":"10.93.0.2"}`)
	must(b, "ensure-bridge", `{"name":"bangerub","ip":"10.94.0.1","prefix":"10.94.0.0/24"}`)
	must(b, "nat-ensure", `{"bridge":"bangerub","prefix":"10.94.0.0/24"}`)
	must(b, "nat-add", `{"addr":"10.94.0.2"}`)
	// The configured cidr may carry a host part; it names the same subnet.
	must(a, "nat-ensure", `{"bridge":"bangerua","prefix":"10.93.0.9/24"}`)

	snapshot := func() string {
		return inNS(t, ns, "nft", "list", "ruleset") + hostLinks(t, ns)
	}
	before := snapshot()
	tableA := inNS(t, ns, "nft", "list", "table", "ip", network.NATTableName("bangerua"))

	attacks := []struct {
		c             Caller
		op, args      string
		object, cause string
	}{
		{b, "delete-tap", `{"name":"bgt-ua1"}`, "bgt-ua1", "owned by uid 1000, not 4242"},
		{root, "delete-tap", `{"name":"bgt-ua1"}`, "bgt-ua1", "owned by uid 1000, not 0"},
		{b, "rename-tap", `{"from":"bgt-ua1","to":"bgt-ub9"}`, "bgt-ua1", "owned by uid 1000, not 4242"},
		{b, "create-tap", `{"name":"bgt-ub9","bridge":"bangerua"}`, "bgt-ub9", "bridge bangerua belongs to uid 1000, not 4242"},
		{b, "delete-bridge", `{"name":"bangerua"}`, "bangerua", "belongs to uid 1000, not 4242"},
		{root, "delete-bridge", `{"name":"bangerua"}`, "bangerua", "belongs to uid 1000, not 0"},
		{b, "ensure-bridge", `{"name":"bangerua","ip":"10.93.0.1","prefix":"10.93.0.0/24"}`, "bangerua", "belongs to uid 1000, not 4242"},
		{b, "ensure-bridge", `{"name":"bangerub","ip":"10.93.0.1","prefix":"10.93.0.0/24"}`, "bangerub", "overlaps 10.93.0.0/24 on interface bangerua"},
		{b, "nat-add", `{"addr":"8.8.8.8"}`, "nat-add 8.8.8.8", "not inside the subnet of a banger bridge of uid 4242"},
		{b, "nat-add", `{"addr":"10.93.0.3"}`, "nat-add 10.93.0.3", "not inside the subnet"},
		{b, "nat-remove", `{"addr":"10.93.0.2"}`, "nat-remove 10.93.0.2", "not inside the subnet"},
		{root, "nat-remove", `{"addr":"10.93.0.2"}`, "nat-remove 10.93.0.2", "uid 0 has no banger bridge"},
		{b, "nat-add", `{"addr":"10.94.0.0"}`, "nat-add 10.94.0.0", "network address"},
		{b, "nat-add", `{"addr":"10.94.0.255"}`, "nat-add 10.94.0.255", "broadcast address"},
		{b, "nat-add", `{"addr":"10.94.0.1"}`, "nat-add 10.94.0.1", "address of bridge bangerub"},
		{b, "nat-ensure", `{"bridge":"bangerub","prefix":"0.0.0.0/0"}`, "nat-ensure bangerub", "0.0.0.0/0 is not the subnet of bridge bangerub"},
		{b, "nat-ensure", `{"bridge":"bangerub","prefix":"10.93.0.0/24"}`, "nat-ensure bangerub", "10.93.0.0/24 is not the subnet"},
		{b, "nat-ensure", `{"bridge":"bangerub","prefix":"10.94.0.0/16"}`, "nat-ensure bangerub", "10.94.0.0/16 is not the subnet"},
		{b, "nat-ensure", `{"bridge":"bangerua","prefix":"10.93.0.0/24"}`, "nat-ensure bangerua", "not a banger bridge of uid 4242"},
	}
	for _, at := range attacks {
		_, err := dispatch(ctx, at.c, at.op, []byte(at.args))
		switch {
		case !errors.Is(err, ErrRefused):
			t.Errorf("uid %d %s %s = %v; want refused", at.c.UID, at.op, at.args, err)
		case strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), at.object) || !strings.Contains(err.Error(), at.cause):
			t.Errorf("uid %d %s %s = %q; want one line naming %q and %q", at.c.UID, at.op, at.args, err, at.object, at.cause)
		}
	}
	if after := snapshot(); after != before {
		t.Fatalf("refused ops changed the host:\n--- before\n%s\n--- after\n%s", before, after)
	}

	must(b, "nat-teardown", `{}`)
	must(b, "nat-teardown", `{}`)
	if got := inNS(t, ns, "nft", "list", "table", "ip", network.NATTableName("bangerua")); got != tableA {
		t.Fatalf("uid 4242's teardown changed uid 1000's table:\n%s\nwas:\n%s", got, tableA)
	}
	if tables := squash(inNS(t, ns, "nft", "list", "tables")); tables != "table ip "+network.NATTableName("bangerua") {
		t.Fatalf("tables after uid 4242's teardown = %q; want only uid 1000's", tables)
	}
	if elems := natElems(t, ns, "bangerua"); !slices.Equal(elems, []string{"10.93.0.2"}) {
		t.Fatalf("uid 1000's nat members after uid 4242's teardown = %v", elems)
	}
	// Root's teardown is no different.
	must(root, "nat-teardown", `{}`)
	if elems := natElems(t, ns, "bangerua"); !slices.Equal(elems, []string{"10.93.0.2"}) {
		t.Fatalf("uid 1000's nat members after root's teardown = %v", elems)
	}

	must(a, "nat-remove", `{"addr":"10.93.0.2"}`)
	must(a, "delete-tap", `{"name":"bgt-ua1"}`)
	must(a, "nat-teardown", `{}`)
	must(a, "delete-bridge", `{"name":"bangerua"}`)
	must(b, "delete-bridge", `{"name":"bangerub"}`)
	if tables := squash(inNS(t, ns, "nft", "list", "tables")); tables != "" {
		t.Errorf("tables left: %q", tables)
	}
	var names []string
	for n := range links(t, ns) {
		names = append(names, n)
	}
	if !slices.Equal(names, []string{"lo"}) {
		t.Errorf("links left: %v", names)
	}
}

// TestForwardPolicyFixWorks applies the rules ForwardPolicy prints, with the
// real iptables and nft, and checks the doctor is then satisfied.
func TestForwardPolicyFixWorks(t *testing.T) {
	ns := namedNetns(t)
	ctx := context.Background()
	c := New(Options{})
	const bridge = "bangert8"
	if _, err := c.ForwardPolicy(ctx, "docker0"); !errors.Is(err, ErrRefused) {
		t.Fatalf("ForwardPolicy(docker0) = %v; want refused", err)
	}
	setups := []struct {
		name  string
		setup [][]string
		want  string
	}{
		{"iptables FORWARD drop", [][]string{{"iptables", "-P", "FORWARD", "DROP"}}, "iptables -I FORWARD"},
		{"docker layout", [][]string{{"nft", "flush", "ruleset"}, {"iptables", "-P", "FORWARD", "DROP"}, {"iptables", "-N", "DOCKER-USER"}, {"iptables", "-A", "DOCKER-USER", "-j", "RETURN"}, {"iptables", "-I", "FORWARD", "-j", "DOCKER-USER"}}, "iptables -I DOCKER-USER"},
		{"native inet", [][]string{{"nft", "flush", "ruleset"}, {"nft", "add table inet fw; add chain inet fw fw_forward { type filter hook forward priority 0; policy drop; }"}}, "nft insert rule inet fw fw_forward"},
	}
	for _, s := range setups {
		// run flat: the test's thread is the one in the namespace; each
		// setup starts from an empty ruleset of this namespace
		for _, cmd := range s.setup {
			inNS(t, ns, cmd...)
		}
		res, err := c.ForwardPolicy(ctx, bridge)
		ok, detail, fix := res.OK, res.Detail, res.Fix
		if err != nil || ok || !strings.Contains(fix, s.want) {
			t.Fatalf("%s: ForwardPolicy = %v, %q, %q, %v; want a fix with %q", s.name, ok, detail, fix, err, s.want)
		}
		for _, line := range strings.Split(fix, "\n") {
			inNS(t, ns, "sh", "-c", line)
		}
		res, err = c.ForwardPolicy(ctx, bridge)
		ok, detail, fix = res.OK, res.Detail, res.Fix
		if err != nil || !ok {
			t.Fatalf("%s: after applying the fix ForwardPolicy = %v, %q, %q, %v", s.name, ok, detail, fix, err)
		}
	}
}
