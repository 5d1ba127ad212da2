package network

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// rawTap makes a persistent tap by hand, the way another program (or an
// older banger) would: owner < 0 leaves it without an owner; alias "" leaves
// it unmarked.
func rawTap(t *testing.T, name string, owner int, alias string) netlink.Link {
	t.Helper()
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		t.Fatal(err)
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		t.Fatalf("creating tap %s: %v", name, err)
	}
	if owner >= 0 {
		if err := unix.IoctlSetInt(fd, unix.TUNSETOWNER, owner); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETPERSIST, 1); err != nil {
		t.Fatal(err)
	}
	l, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if alias != "" {
		if err := netlink.LinkSetAlias(l, alias); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

func mustLink(t *testing.T, name string) netlink.Link {
	t.Helper()
	l, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatalf("%s is gone: %v", name, err)
	}
	return l
}

func addrsOf(t *testing.T, name string) []string {
	t.Helper()
	as, err := netlink.AddrList(mustLink(t, name), netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range as {
		out = append(out, a.IPNet.String())
	}
	slices.Sort(out)
	return out
}

// wantRefused checks err is an ErrNotBanger refusal on one line that says
// what it was doing and why.
func wantRefused(t *testing.T, what string, err error, parts ...string) {
	t.Helper()
	if !errors.Is(err, ErrNotBanger) {
		t.Errorf("%s = %v; want ErrNotBanger", what, err)
		return
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("%s: refusal is not one line: %q", what, err)
	}
	for _, p := range append(parts, "left alone") {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("%s = %q; want it to mention %q", what, err, p)
		}
	}
}

func TestPrivilegedTapOwnerChecked(t *testing.T) {
	inNetns(t)
	const bridge, rootBridge = "bangero1", "bangero0"
	p := netip.MustParsePrefix("10.84.0.0/24")
	if _, err := EnsureBridge(bridge, Gateway(p), p, 1000); err != nil {
		t.Fatal(err)
	}
	if err := CreateTap("bgt-mine", bridge, 1000, 1000); err != nil {
		t.Fatal(err)
	}
	br := mustLink(t, bridge)
	// Another user, and root (a caller like any other), may neither delete
	// nor rename a tap owned by uid 1000, though it carries banger's mark.
	for _, uid := range []int{4242, 0} {
		wantRefused(t, fmt.Sprintf("DeleteTap as %d", uid), DeleteTap("bgt-mine", uid),
			"deleting tap bgt-mine", fmt.Sprintf("owned by uid 1000, not %d", uid))
		wantRefused(t, fmt.Sprintf("RenameTap as %d", uid), RenameTap("bgt-mine", "bgt-stolen", uid),
			"renaming tap bgt-mine to bgt-stolen", fmt.Sprintf("owned by uid 1000, not %d", uid))
	}
	l := mustLink(t, "bgt-mine")
	if l.Attrs().MasterIndex != br.Attrs().Index || l.Attrs().Alias != TapAlias || l.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("bgt-mine changed by the refused calls: master %d alias %q flags %v", l.Attrs().MasterIndex, l.Attrs().Alias, l.Attrs().Flags)
	}
	if _, err := netlink.LinkByName("bgt-stolen"); err == nil {
		t.Error("bgt-stolen exists after a refused rename")
	}

	// OwnTap (the daemon's check before it takes over a pool tap by name)
	// agrees: the owner's, nobody else's, and never an unmarked tap.
	rawTap(t, "bgt-unmarked", 1000, "")
	for _, c := range []struct {
		tap  string
		uid  int
		want bool
	}{{"bgt-mine", 1000, true}, {"bgt-mine", 4242, false}, {"bgt-mine", 0, false}, {"bgt-unmarked", 1000, false}, {"bgt-absent", 1000, false}} {
		if got := OwnTap(c.tap, c.uid); got != c.want {
			t.Errorf("OwnTap(%s, %d) = %v, want %v", c.tap, c.uid, got, c.want)
		}
	}

	// A marked tap without an owner is nobody's: the netlink library reads
	// the missing owner as uid 0, root must still be refused.
	rawTap(t, "bgt-noowner", -1, TapAlias)
	if OwnTap("bgt-noowner", 0) {
		t.Error("OwnTap: an ownerless tap counted as root's")
	}
	wantRefused(t, "DeleteTap of an ownerless tap as root", DeleteTap("bgt-noowner", 0), "has no owner")
	mustLink(t, "bgt-noowner")

	// Root's own taps stay root's to delete.
	if _, err := EnsureBridge(rootBridge, netip.MustParseAddr("10.84.1.1"), netip.MustParsePrefix("10.84.1.0/24"), 0); err != nil {
		t.Fatal(err)
	}
	if err := CreateTap("bgt-root", rootBridge, 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := DeleteTap("bgt-root", 0); err != nil {
		t.Fatalf("root deleting its own tap: %v", err)
	}
	if err := DeleteTap("bgt-mine", 1000); err != nil {
		t.Fatalf("owner deleting its tap: %v", err)
	}
	for _, n := range []string{"bgt-root", "bgt-mine"} {
		if _, err := netlink.LinkByName(n); err == nil {
			t.Errorf("%s still exists after its owner deleted it", n)
		}
	}
}

func TestPrivilegedBridgeOwnerChecked(t *testing.T) {
	inNetns(t)
	const bridge = "bangerua"
	p := netip.MustParsePrefix("10.85.0.0/24")
	created, err := EnsureBridge(bridge, Gateway(p), p, 1000)
	if err != nil || !created {
		t.Fatalf("EnsureBridge = %v, %v", created, err)
	}
	if a := mustLink(t, bridge).Attrs().Alias; a != "banger uid=1000" {
		t.Fatalf("bridge alias %q; want the uid record %q", a, "banger uid=1000")
	}
	_, err = EnsureBridge(bridge, Gateway(p), p, 4242)
	wantRefused(t, "EnsureBridge of another uid's bridge", err, "ensuring bridge "+bridge, "belongs to uid 1000, not 4242")
	other := netip.MustParsePrefix("10.86.0.0/24")
	_, err = EnsureBridge(bridge, Gateway(other), other, 4242)
	wantRefused(t, "EnsureBridge with another address", err, "belongs to uid 1000, not 4242")
	wantRefused(t, "DeleteBridge of another uid's bridge", DeleteBridge(bridge, 4242), "deleting bridge "+bridge, "belongs to uid 1000, not 4242")
	wantRefused(t, "CreateTap on another uid's bridge", CreateTap("bgt-x", bridge, 4242, 4242), "creating tap bgt-x", "belongs to uid 1000, not 4242")
	if _, err := netlink.LinkByName("bgt-x"); err == nil {
		t.Error("bgt-x was created on another uid's bridge")
	}
	// A tap of 4242 that sits on 1000's bridge cannot be handed out by 4242.
	tap := rawTap(t, "bgt-p1", 4242, TapAlias)
	if err := netlink.LinkSetMaster(tap, mustLink(t, bridge)); err != nil {
		t.Fatal(err)
	}
	wantRefused(t, "RenameTap of a tap on another uid's bridge", RenameTap("bgt-p1", "bgt-p2", 4242), "belongs to uid 1000, not 4242")
	if got := addrsOf(t, bridge); !slices.Equal(got, []string{"10.85.0.1/24"}) {
		t.Errorf("bridge addresses after refused calls = %v; want only 10.85.0.1/24", got)
	}
	if a := mustLink(t, bridge).Attrs().Alias; a != "banger uid=1000" {
		t.Errorf("bridge alias after refused calls = %q", a)
	}

	// A bridge named like banger's with someone else's alias is not banger's.
	if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "bangerf"}}); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetAlias(mustLink(t, "bangerf"), "lab bridge"); err != nil {
		t.Fatal(err)
	}
	fp := netip.MustParsePrefix("10.86.1.0/24")
	_, err = EnsureBridge("bangerf", Gateway(fp), fp, 1000)
	wantRefused(t, "EnsureBridge of a foreign bridge", err, `has the alias "lab bridge"`)
	wantRefused(t, "DeleteBridge of a foreign bridge", DeleteBridge("bangerf", 1000), `has the alias "lab bridge"`)
	wantRefused(t, "CreateTap on a foreign bridge", CreateTap("bgt-y", "bangerf", 1000, 1000), `has the alias "lab bridge"`)
	if got := addrsOf(t, "bangerf"); len(got) != 0 {
		t.Errorf("foreign bridge got addresses %v", got)
	}

	if err := DeleteBridge(bridge, 1000); err != nil {
		t.Fatalf("owner deleting its bridge: %v", err)
	}
}

// TestPrivilegedBridgeAdoption: a bridge without any record (made by a
// banger older than the record, or left by a kill between creating the
// bridge and recording its uid) goes to the first ensure whose uid owns
// everything on it.
func TestPrivilegedBridgeAdoption(t *testing.T) {
	inNetns(t)
	const old = "bangerl"
	p := netip.MustParsePrefix("10.87.0.0/24")
	if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: old}}); err != nil {
		t.Fatal(err)
	}
	br := mustLink(t, old)
	a, _ := netlink.ParseAddr("10.87.0.1/24")
	if err := netlink.AddrAdd(br, a); err != nil {
		t.Fatal(err)
	}
	tap := rawTap(t, "bgt-old", 1000, TapAlias)
	if err := netlink.LinkSetMaster(tap, br); err != nil {
		t.Fatal(err)
	}

	wantRefused(t, "DeleteBridge of an unrecorded bridge", DeleteBridge(old, 1000), "carries no banger record")
	_, err := EnsureBridge(old, Gateway(p), p, 4242)
	wantRefused(t, "EnsureBridge by a uid that does not own its ports", err, "port bgt-old is not a banger tap of uid 4242")
	_, err = EnsureBridge(old, netip.MustParseAddr("10.87.0.9"), p, 1000)
	wantRefused(t, "EnsureBridge with another address", err, "has address 10.87.0.1/24, not 10.87.0.9/24")
	if a := mustLink(t, old).Attrs().Alias; a != "" {
		t.Fatalf("refused adoption left alias %q", a)
	}
	created, err := EnsureBridge(old, Gateway(p), p, 1000)
	if err != nil || created {
		t.Fatalf("EnsureBridge adopting the old bridge = %v, %v; want adopted, not created", created, err)
	}
	if a := mustLink(t, old).Attrs().Alias; a != "banger uid=1000" {
		t.Errorf("adopted bridge alias %q", a)
	}
	if m := mustLink(t, "bgt-old").Attrs().MasterIndex; m != br.Attrs().Index {
		t.Errorf("adoption moved the tap off the bridge (master %d)", m)
	}
	if got := addrsOf(t, old); !slices.Equal(got, []string{"10.87.0.1/24"}) {
		t.Errorf("adopted bridge addresses %v", got)
	}

	// Half made: no record, no address, no port.
	if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "bangerh"}}); err != nil {
		t.Fatal(err)
	}
	hp := netip.MustParsePrefix("10.88.0.0/24")
	if _, err := EnsureBridge("bangerh", Gateway(hp), hp, 1000); err != nil {
		t.Fatalf("EnsureBridge of a half-made bridge: %v", err)
	}
	if a := mustLink(t, "bangerh").Attrs().Alias; a != "banger uid=1000" {
		t.Errorf("half-made bridge alias %q after ensure", a)
	}

	// Something that is not a banger tap on it: never adopted.
	if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "bangerv"}}); err != nil {
		t.Fatal(err)
	}
	v := mustVeth(t, "vethv", "")
	if err := netlink.LinkSetMaster(v, mustLink(t, "bangerv")); err != nil {
		t.Fatal(err)
	}
	vp := netip.MustParsePrefix("10.88.1.0/24")
	_, err = EnsureBridge("bangerv", Gateway(vp), vp, 1000)
	wantRefused(t, "EnsureBridge of a bridge with a veth on it", err, "port vethv is not a banger tap of uid 1000")
}

// TestPrivilegedTapAdopted: a leftover tap (a kill after the tap was made
// persistent, before it was enslaved) is reused by CreateTap when it is the
// caller's.
func TestPrivilegedTapAdopted(t *testing.T) {
	inNetns(t)
	pa, pb := netip.MustParsePrefix("10.89.0.0/24"), netip.MustParsePrefix("10.89.1.0/24")
	if _, err := EnsureBridge("bangera", Gateway(pa), pa, 1000); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureBridge("bangerb", Gateway(pb), pb, 1000); err != nil {
		t.Fatal(err)
	}
	br := mustLink(t, "bangera")
	if err := createMarkedTap("bgt-left", 1000, 1000); err != nil {
		t.Fatal(err)
	}
	before := mustLink(t, "bgt-left")
	if before.Attrs().MasterIndex != 0 || before.Attrs().Flags&net.FlagUp != 0 {
		t.Fatalf("leftover tap is already attached or up: %+v", before.Attrs())
	}
	if err := CreateTap("bgt-left", "bangera", 1000, 1000); err != nil {
		t.Fatalf("CreateTap over a leftover tap of the caller: %v", err)
	}
	after := mustLink(t, "bgt-left")
	if after.Attrs().Index != before.Attrs().Index || after.Attrs().MasterIndex != br.Attrs().Index || after.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("leftover tap not adopted: index %d→%d master %d up %v", before.Attrs().Index, after.Attrs().Index, after.Attrs().MasterIndex, after.Attrs().Flags&net.FlagUp != 0)
	}

	if err := createMarkedTap("bgt-left2", 1000, 1000); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetMaster(mustLink(t, "bgt-left2"), mustLink(t, "bangerb")); err != nil {
		t.Fatal(err)
	}
	wantRefused(t, "CreateTap over a tap on another bridge", CreateTap("bgt-left2", "bangera", 1000, 1000), "enslaved to another interface")
	if err := createMarkedTap("bgt-left3", 4242, 4242); err != nil {
		t.Fatal(err)
	}
	wantRefused(t, "CreateTap over another uid's tap", CreateTap("bgt-left3", "bangera", 1000, 1000), "owned by uid 4242, not 1000")
	if m := mustLink(t, "bgt-left3").Attrs().MasterIndex; m != 0 {
		t.Errorf("another uid's tap was enslaved (master %d)", m)
	}
}

const tapChildEnv = "BANGER_TEST_TAP_CHILD"

// TestTapCreateChild is the process TestPrivilegedTapCreateKilled kills: it
// enters the parent's namespace and runs CreateTap, stopping at a step.
func TestTapCreateChild(t *testing.T) {
	spec := os.Getenv(tapChildEnv)
	if spec == "" {
		t.Skip("the process TestPrivilegedTapCreateKilled starts and kills; runs only there")
	}
	f := strings.Fields(spec) // netns path, tap, bridge, stage
	runtime.LockOSThread()
	ns, err := netns.GetFromPath(f[0])
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	if err := netns.Set(ns); err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	tapStep = func(stage string) {
		if stage == f[3] {
			fmt.Println("at", stage)
			time.Sleep(time.Hour) // until killed
		}
	}
	if err := CreateTap(f[1], f[2], 1000, 1000); err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println("done")
}

// TestPrivilegedTapCreateKilled kills a process creating a tap at each step
// before the tap is persistent and marked, and checks that no tap is left;
// an unkilled creation leaves a persistent marked tap.
func TestPrivilegedTapCreateKilled(t *testing.T) {
	inNetns(t)
	const bridge = "bangerk"
	p := netip.MustParsePrefix("10.90.0.0/24")
	if _, err := EnsureBridge(bridge, Gateway(p), p, 1000); err != nil {
		t.Fatal(err)
	}
	nsPath := fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())
	for _, stage := range []string{"created", "marked", "none"} {
		name := "bgt-k" + stage
		cmd := exec.Command(os.Args[0], "-test.run=^TestTapCreateChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), tapChildEnv+"="+strings.Join([]string{nsPath, name, bridge, stage}, " "))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		want := "at " + stage
		if stage == "none" {
			want = "done"
		}
		var seen []string
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			seen = append(seen, sc.Text())
			if sc.Text() == want {
				break
			}
		}
		if !slices.Contains(seen, want) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("stage %s: the child never reached it: %q", stage, seen)
		}
		if stage == "none" {
			if err := cmd.Wait(); err != nil {
				t.Fatalf("child: %v", err)
			}
			l := mustLink(t, name)
			tp, ok := l.(*netlink.Tuntap)
			if !ok || tp.NonPersist || l.Attrs().Alias != TapAlias || tp.Owner != 1000 || l.Attrs().MasterIndex != mustLink(t, bridge).Attrs().Index {
				t.Fatalf("created tap = %T persist %v alias %q owner %v master %d; want a persistent marked tap of 1000 on %s",
					l, ok && !tp.NonPersist, l.Attrs().Alias, tp.Owner, l.Attrs().MasterIndex, bridge)
			}
			continue
		}
		// At this step the tap exists, bound to the child's descriptor.
		l := mustLink(t, name)
		tp, ok := l.(*netlink.Tuntap)
		if !ok || !tp.NonPersist {
			t.Fatalf("stage %s: tap %s is %T, persistent %v; want a tap that is not persistent yet", stage, name, l, ok && !tp.NonPersist)
		}
		if stage == "created" && l.Attrs().Alias != "" {
			t.Fatalf("stage created: alias already %q", l.Attrs().Alias)
		}
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		cmd.Wait()
		deadline := time.Now().Add(5 * time.Second)
		for {
			if _, err := netlink.LinkByName(name); err != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("stage %s: tap %s survived the kill of its creator", stage, name)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// natTableNames lists the IPv4 tables whose name starts with banger.
func natTableNames(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, n := range tableNames(t) {
		if strings.HasPrefix(n, "ip banger") {
			out = append(out, n)
		}
	}
	return out
}

func TestPrivilegedNATOwners(t *testing.T) {
	inNetns(t)
	const a, b = "bangerna", "bangernb"
	pa, pb := netip.MustParsePrefix("10.91.0.0/24"), netip.MustParsePrefix("10.92.0.0/24")
	ga, gb := netip.MustParseAddr("10.91.0.2"), netip.MustParseAddr("10.92.0.2")
	if _, err := NATEnsure(a, pa, 1000); err != nil {
		t.Fatal(err)
	}
	if _, err := NATEnsure(b, pb, 2000); err != nil {
		t.Fatal(err)
	}
	if err := NATAdd(a, ga, 1000); err != nil {
		t.Fatal(err)
	}
	if err := NATAdd(b, gb, 2000); err != nil {
		t.Fatal(err)
	}
	_, err := NATEnsure(a, pa, 2000)
	wantRefused(t, "NATEnsure of another uid's table", err, "table ip banger-bangerna belongs to uid 1000, not 2000")
	wantRefused(t, "NATAdd to another uid's table", NATAdd(a, netip.MustParseAddr("10.91.0.3"), 2000), "belongs to uid 1000, not 2000")
	wantRefused(t, "NATRemove from another uid's table", NATRemove(a, ga, 2000), "belongs to uid 1000, not 2000")
	if m, _ := NATMembers(a); !slices.Equal(m, []netip.Addr{ga}) {
		t.Errorf("members of %s after refused calls = %v; want [%s]", a, m, ga)
	}

	// A table with banger's name but no record is nobody's.
	c, _ := nftables.New()
	z := c.AddTable(ipTable(NATTableName("bangernz")))
	c.AddChain(&nftables.Chain{Name: chainPost, Table: z})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	_, err = NATEnsure("bangernz", netip.MustParsePrefix("10.93.0.0/24"), 1000)
	wantRefused(t, "NATEnsure of an unrecorded table", err, "carries no banger record")

	if err := NATTeardown(2000, []string{b}); err != nil {
		t.Fatal(err)
	}
	if got, want := natTableNames(t), []string{"ip banger-bangerna", "ip banger-bangernz"}; !slices.Equal(got, want) {
		t.Fatalf("tables after uid 2000's teardown = %v; want %v", got, want)
	}
	if m, _ := NATMembers(a); !slices.Equal(m, []netip.Addr{ga}) {
		t.Errorf("members of %s after uid 2000's teardown = %v", a, m)
	}
	if err := NATTeardown(2000, []string{b}); err != nil {
		t.Errorf("second teardown: %v", err)
	}
	if err := NATTeardown(1000, []string{a}); err != nil {
		t.Fatal(err)
	}
	if got, want := natTableNames(t), []string{"ip banger-bangernz"}; !slices.Equal(got, want) {
		t.Fatalf("tables after uid 1000's teardown = %v; want %v", got, want)
	}
}

// TestPrivilegedLegacyNATTable: the shared table of older versions is its
// bridge owner's: left alone for anyone else, emptied by NATRemove, and
// replaced by NATEnsure with its members carried over.
func TestPrivilegedLegacyNATTable(t *testing.T) {
	inNetns(t)
	const bridge = "bangerm"
	p := netip.MustParsePrefix("10.94.0.0/24")
	c, _ := nftables.New()
	lt := c.AddTable(ipTable(legacyNATTable))
	var els []nftables.SetElement
	for _, s := range []string{"10.94.0.2", "10.94.0.3", "192.168.5.5"} {
		k := netip.MustParseAddr(s).As4()
		els = append(els, nftables.SetElement{Key: k[:]})
	}
	if err := c.AddSet(natSet(lt), els); err != nil {
		t.Fatal(err)
	}
	accept := nftables.ChainPolicyAccept
	post := c.AddChain(&nftables.Chain{Name: chainPost, Table: lt, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookRef(unix.NF_INET_POST_ROUTING), Priority: nftables.ChainPriorityRef(100), Policy: &accept})
	fwd := c.AddChain(&nftables.Chain{Name: chainFwd, Table: lt, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookRef(unix.NF_INET_FORWARD), Priority: nftables.ChainPriorityRef(0), Policy: &accept})
	// The old rules: no owner comment.
	c.AddRule(&nftables.Rule{Table: lt, Chain: post, Exprs: postroutingRules(bridge, 0)[0].exprs})
	for _, r := range forwardRules(bridge, p) {
		c.AddRule(&nftables.Rule{Table: lt, Chain: fwd, Exprs: r.exprs})
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	legacy := func() []netip.Addr {
		t.Helper()
		m, err := members(c, legacyNATTable)
		if err != nil {
			t.Fatalf("reading the legacy set: %v", err)
		}
		slices.SortFunc(m, netip.Addr.Compare)
		return m
	}

	op := netip.MustParsePrefix("10.95.0.0/24")
	if _, err := NATEnsure("bangero", op, 1000); err != nil {
		t.Fatal(err)
	}
	if err := NATTeardown(1000, []string{"bangero"}); err != nil {
		t.Fatal(err)
	}
	if len(legacy()) != 3 {
		t.Fatalf("the legacy table of %s was changed by another bridge's owner: %v", bridge, legacy())
	}
	if err := NATRemove(bridge, netip.MustParseAddr("10.94.0.3"), 1000); err != nil {
		t.Fatal(err)
	}
	if got, want := legacy(), []netip.Addr{netip.MustParseAddr("10.94.0.2"), netip.MustParseAddr("192.168.5.5")}; !slices.Equal(got, want) {
		t.Fatalf("legacy members after NATRemove = %v; want %v", got, want)
	}
	if _, err := NATEnsure(bridge, p, 1000); err != nil {
		t.Fatal(err)
	}
	if got, want := natTableNames(t), []string{"ip banger-bangerm"}; !slices.Equal(got, want) {
		t.Fatalf("tables after NATEnsure = %v; want %v (legacy replaced)", got, want)
	}
	if m, _ := NATMembers(bridge); !slices.Equal(m, []netip.Addr{netip.MustParseAddr("10.94.0.2")}) {
		t.Errorf("members carried over = %v; want only 10.94.0.2 (inside %s)", m, p)
	}
}
