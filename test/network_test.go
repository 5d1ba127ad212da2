//go:build system

package test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"banger/internal/api"
)

// links returns name → link JSON of every interface in the namespace.
func (e *env) links() map[string]map[string]any {
	e.t.Helper()
	out := run(e.t, "ip", "-n", e.ns, "-j", "-d", "link", "show")
	var ls []map[string]any
	if err := json.Unmarshal([]byte(out), &ls); err != nil {
		e.t.Fatalf("ip -j link: %v", err)
	}
	m := map[string]map[string]any{}
	for _, l := range ls {
		m[fmt.Sprint(l["ifname"])] = l
	}
	return m
}

// nsNft runs nft inside the namespace.
func (e *env) nsNft(args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", e.ns, "nft"}, args...)...).CombinedOutput()
	return string(out), err
}

// natSetElems lists the elements of banger's NAT set from `nft -j`.
func (e *env) natSetElems() []string {
	e.t.Helper()
	out, err := e.nsNft("-j", "list", "set", "ip", natTable, "nat_guests")
	if err != nil && strings.Contains(out, "No such file or directory") {
		return nil // no NAT table: NAT was never used in this namespace
	}
	if err != nil {
		e.t.Fatalf("nft -j list set ip %s nat_guests: %v: %s", natTable, err, out)
	}
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		e.t.Fatalf("nft -j: %v: %s", err, out)
	}
	var elems []string
	for _, obj := range doc.Nftables {
		raw, ok := obj["set"]
		if !ok {
			continue
		}
		var set struct {
			Elem []json.RawMessage `json:"elem"`
		}
		if err := json.Unmarshal(raw, &set); err != nil {
			e.t.Fatalf("nft set: %v", err)
		}
		for _, el := range set.Elem {
			var s string
			if json.Unmarshal(el, &s) != nil {
				s = string(el)
			}
			elems = append(elems, s)
		}
	}
	slices.Sort(elems)
	return elems
}

// foreignObjects creates objects (an interface with an address, a plain
// tap named like banger's, an nft table with a set and a masquerade rule) banger must never touch in the namespace
// that banger must never touch, and returns a snapshot function to compare them later.
func (e *env) foreignObjects() func() string {
	e.t.Helper()
	run(e.t, "ip", "-n", e.ns, "link", "add", "foreign0", "type", "bridge")
	run(e.t, "ip", "-n", e.ns, "addr", "add", "10.99.0.1/24", "dev", "foreign0")
	run(e.t, "ip", "-n", e.ns, "link", "set", "foreign0", "up")
	run(e.t, "ip", "-n", e.ns, "tuntap", "add", "dev", "bgt-xxxx", "mode", "tap")
	for _, args := range [][]string{
		{"add", "table", "ip", "foreign"},
		{"add", "set", "ip", "foreign", "guests", "{ type ipv4_addr; }"},
		{"add", "element", "ip", "foreign", "guests", "{ 172.16.0.2, 172.16.0.3 }"},
		{"add", "chain", "ip", "foreign", "post", "{ type nat hook postrouting priority 100; }"},
		{"add", "rule", "ip", "foreign", "post", "ip", "saddr", "@guests", "masquerade"},
	} {
		if out, err := e.nsNft(args...); err != nil {
			e.t.Fatalf("nft %v: %v: %s", args, err, out)
		}
	}
	return func() string {
		e.t.Helper()
		tbl, err := e.nsNft("list", "table", "ip", "foreign")
		if err != nil {
			e.t.Fatalf("foreign nft table gone: %v: %s", err, tbl)
		}
		ls := e.links()
		var b strings.Builder
		b.WriteString(tbl)
		for _, n := range []string{"foreign0", "bgt-xxxx"} {
			l, ok := ls[n]
			if !ok {
				e.t.Fatalf("foreign interface %s was removed", n)
			}
			fmt.Fprintf(&b, "%s %v %v %v\n", n, l["flags"], l["master"], l["ifalias"])
		}
		b.WriteString(run(e.t, "ip", "-n", e.ns, "-4", "addr", "show", "dev", "foreign0"))
		return b.String()
	}
}

// bangerTaps lists the bgt- interfaces other than the foreign one.
func (e *env) bangerTaps() []string {
	var out []string
	for _, tp := range e.taps() {
		if tp != "bgt-xxxx" {
			out = append(out, tp)
		}
	}
	return out
}

// TestNetworkDeleteTenLeavesNothing deletes ten VMs in one call (some never
// started, some NATed, some stopped, one NATed and stopped) and checks that
// nothing of banger's VMs remains while foreign objects are untouched, and
// that a freed NATed address is not NATed for the next VM given it.
func TestNetworkDeleteTenLeavesNothing(t *testing.T) {
	e := newEnv(t, "")
	snapshot := e.foreignObjects()
	before := snapshot()
	e.registerImage()

	type spec struct {
		name      string
		flags     []string
		stopAfter bool
	}
	specs := []spec{
		{"n0", []string{"--nat"}, false}, // lowest address: reused below
		{"n1", []string{"--nat"}, true},
		{"n2", []string{"--nat", "--no-start"}, false},
		{"n3", nil, false},
		{"n4", nil, true},
		{"n5", []string{"--no-start"}, false},
		{"n6", []string{"--nat"}, false},
		{"n7", nil, false},
		{"n8", []string{"--nat"}, true},
		{"n9", []string{"--no-start"}, false},
	}
	var all []string
	ips := map[string]string{}
	for _, s := range specs {
		e.ok(append([]string{"vm", "create", s.name}, s.flags...)...)
		all = append(all, s.name)
	}
	for _, s := range specs {
		if s.stopAfter {
			e.ok("vm", "stop", s.name)
		}
	}
	var wantNAT []string
	running := 0
	for _, s := range specs {
		v := e.vm(s.name)
		ips[s.name] = v.IP
		up := !s.stopAfter && !slices.Contains(s.flags, "--no-start")
		if up != (v.State == api.StateRunning) {
			t.Fatalf("%s: state %s", s.name, v.State)
		}
		if up {
			running++
		}
		if up && slices.Contains(s.flags, "--nat") {
			wantNAT = append(wantNAT, v.IP)
		}
	}
	slices.Sort(wantNAT)
	if got := e.natSetElems(); !slices.Equal(got, wantNAT) {
		t.Fatalf("nat set before delete = %v, want %v", got, wantNAT)
	}
	if got := len(e.bangerTaps()); got != running {
		t.Fatalf("want %d banger taps for %d running vms, got %v", running, running, e.bangerTaps())
	}

	out := e.ok(append([]string{"vm", "delete"}, all...)...)
	if vms := e.vms(); len(vms) != 0 {
		t.Fatalf("vms after deleting ten: %v\n%s", vms, out)
	}
	if taps := e.bangerTaps(); len(taps) != 0 {
		t.Fatalf("banger taps left: %v", taps)
	}
	if got := e.natSetElems(); len(got) != 0 {
		t.Fatalf("nat set after delete = %v, want empty", got)
	}
	if p := e.fcProcesses(); len(p) != 0 {
		t.Fatalf("firecracker processes left: %v", p)
	}
	if after := snapshot(); after != before {
		t.Fatalf("foreign objects changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}

	// The freed address of a NATed VM goes to the next VM without NAT.
	e.ok("vm", "create", "next")
	next := e.vm("next")
	if next.IP != ips["n0"] {
		t.Fatalf("next got %s; want n0's freed %s", next.IP, ips["n0"])
	}
	if got := e.natSetElems(); len(got) != 0 {
		t.Fatalf("next is NATed without asking: %v", got)
	}
	e.ok("vm", "set", "next", "--nat")
	if got := e.natSetElems(); !slices.Equal(got, []string{next.IP}) {
		t.Fatalf("nat after vm set --nat = %v", got)
	}
	e.ok("vm", "delete", "next")
	if got := e.natSetElems(); len(got) != 0 {
		t.Fatalf("nat after deleting next = %v", got)
	}
	if taps := e.bangerTaps(); len(taps) != 0 {
		t.Fatalf("banger taps left: %v", taps)
	}
	if after := snapshot(); after != before {
		t.Fatalf("foreign objects changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// TestNetworkCIDROverlap: an address or a route already on the host inside
// cidr makes a VM start fail with a message naming it, and creates nothing.
func TestNetworkCIDROverlap(t *testing.T) {
	tests := []struct {
		name  string
		setup [][]string
		want  string
	}{
		{"address", [][]string{
			{"link", "add", "vpn0", "type", "bridge"},
			{"addr", "add", "172.16.0.77/24", "dev", "vpn0"},
			{"link", "set", "vpn0", "up"},
		}, "overlaps 172.16.0.0/24 on interface vpn0"},
		{"route", [][]string{
			{"link", "add", "docker9", "type", "bridge"},
			{"addr", "add", "10.77.0.1/24", "dev", "docker9"},
			{"link", "set", "docker9", "up"},
			{"route", "add", "172.16.0.128/25", "dev", "docker9"},
		}, "overlaps route 172.16.0.128/25 dev docker9"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, "")
			for _, args := range tt.setup {
				run(t, "ip", append([]string{"-n", e.ns}, args...)...)
			}
			e.registerImage()
			_, errOut, code := e.banger("vm", "create", "clash")
			if code == 0 || !strings.Contains(errOut, tt.want) {
				t.Fatalf("vm create with an overlapping cidr: exit %d, stderr %q; want a failure containing %q", code, errOut, tt.want)
			}
			if strings.Count(strings.TrimSpace(errOut), "\n") > 3 {
				t.Fatalf("error is not short:\n%s", errOut)
			}
			if _, ok := e.links()["banger0"]; ok {
				t.Fatalf("bridge created despite the overlap")
			}
			if taps := e.taps(); len(taps) != 0 {
				t.Fatalf("taps created despite the overlap: %v", taps)
			}
			if p := e.fcProcesses(); len(p) != 0 {
				t.Fatalf("firecracker started despite the overlap: %v", p)
			}
			e.banger("vm", "delete", "clash")
		})
	}
}

// TestNetworkForeignTapLeftAlone: a tap that carries a VM's tap name but is
// not banger's makes that VM's start fail naming it; the tap survives the
// failed start and the VM's delete, which succeeds.
func TestNetworkForeignTapLeftAlone(t *testing.T) {
	e := newEnv(t, "")
	e.registerImage()
	e.ok("vm", "create", "other") // the bridge exists from here on
	e.ok("vm", "create", "victim", "--no-start", "--nat")
	tap := e.vm("victim").Tap
	if !strings.HasPrefix(tap, "bgt-") {
		t.Fatalf("victim has no tap name allocated: %q", tap)
	}
	run(t, "ip", "-n", e.ns, "tuntap", "add", "dev", tap, "mode", "tap")
	_, errOut, code := e.banger("vm", "start", "victim")
	if code == 0 || !strings.Contains(errOut, tap) || !strings.Contains(errOut, "left alone") {
		t.Fatalf("start over a foreign tap: exit %d stderr %q", code, errOut)
	}
	if v := e.vm("victim"); v.State == api.StateRunning {
		t.Fatalf("victim running on a foreign tap")
	}
	if _, ok := e.links()[tap]; !ok {
		t.Fatalf("foreign tap %s removed by the failed start", tap)
	}
	if got := e.natSetElems(); len(got) != 0 {
		t.Fatalf("nat left by the failed start: %v", got)
	}
	// Deleting the VM must not fail on a tap that is not banger's: the
	// teardown leaves it alone and the VM goes away.
	e.ok("vm", "delete", "victim", "other")
	l, ok := e.links()[tap]
	if !ok {
		t.Fatalf("foreign tap %s removed by delete", tap)
	}
	if l["master"] != nil {
		t.Fatalf("foreign tap %s is enslaved to %v", tap, l["master"])
	}
	if got := e.natSetElems(); len(got) != 0 {
		t.Fatalf("nat after delete: %v", got)
	}
	if p := e.fcProcesses(); len(p) != 0 {
		t.Fatalf("firecracker processes left: %v", p)
	}
}

// TestNetworkAddressesLow: `vm create` warns while addresses remain that
// the guest subnet is running out, names the config key and a wider cidr;
// widening it as told and restarting the daemon lets creates go on, and
// VMs made before keep working.
func TestNetworkAddressesLow(t *testing.T) {
	e := newEnv(t, `cidr = "172.16.0.0/28"`+"\n") // 13 guest addresses
	e.registerImage()
	for i := range 4 {
		if out := e.ok("vm", "create", fmt.Sprintf("a%d", i)); strings.Contains(out, "addresses left") {
			t.Fatalf("create %d of 13 warned early:\n%s", i+1, out)
		}
	}
	out, errOut, code := e.banger("vm", "create", "a4")
	if code != 0 || !strings.Contains(out+errOut, "8 of 13 guest addresses left in cidr 172.16.0.0/28") ||
		!strings.Contains(out+errOut, `cidr = "172.16.0.0/26"`) || !strings.Contains(out+errOut, "config.toml") {
		t.Fatalf("fifth create: exit %d, output %q %q; want the low-address warning naming the wider cidr and the config file", code, out, errOut)
	}
	cfgPath := filepath.Join(e.dir, "config.toml")
	b, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgPath, []byte(strings.Replace(string(b), "172.16.0.0/28", "172.16.0.0/26", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	e.ok("daemon", "stop")
	for i := 5; i < 16; i++ {
		if out := e.ok("vm", "create", "--no-start", fmt.Sprintf("a%d", i)); strings.Contains(out, "addresses left") {
			t.Fatalf("create %d of 61 warned:\n%s", i+1, out)
		}
	}
	if ip := e.vm("a15").IP; ip != "172.16.0.17" {
		t.Errorf("a15 got %s, want 172.16.0.17 (past the old /28)", ip)
	}
	e.ok("vm", "start", "a15")
	e.ok("vm", "stop", "a0")
	e.ok("vm", "start", "a0")
	names := []string{"vm", "delete"}
	for i := range 16 {
		names = append(names, fmt.Sprintf("a%d", i))
	}
	e.ok(names...)
	e.assertClean()
}
