package network

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// NAT object names: one table of banger's own (DESIGN.md §5).
const (
	NATTable    = "banger"
	NATSet      = "nat_guests"
	chainPost   = "postrouting"
	chainFwd    = "forward"
	ipForwardPS = "/proc/sys/net/ipv4/ip_forward"
)

// natRule is one rule of banger's table, as nft prints it and as netlink
// expressions; keeping both together keeps RenderRuleset honest.
type natRule struct {
	text  string
	exprs []expr.Any
}

// ifname pads an interface name the way nft compares it (IFNAMSIZ bytes).
func ifname(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

func postroutingRules(bridge string) []natRule {
	return []natRule{{
		text: fmt.Sprintf("ip saddr @%s oifname != %q masquerade", NATSet, bridge),
		exprs: []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
			&expr.Lookup{SourceRegister: 1, SetName: NATSet},
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname(bridge)},
			&expr.Masq{},
		},
	}}
}

func forwardRules(bridge string, prefix netip.Prefix) []natRule {
	p := prefix.Masked()
	net4 := p.Addr().As4()
	m := ^uint32(0) << uint(32-p.Bits())
	mask := [4]byte{byte(m >> 24), byte(m >> 16), byte(m >> 8), byte(m)}
	return []natRule{
		{
			text: fmt.Sprintf("iifname %q ip saddr %s accept", bridge, p),
			exprs: []expr.Any{
				&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(bridge)},
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
				&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask[:], Xor: make([]byte, 4)},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: net4[:]},
				&expr.Verdict{Kind: expr.VerdictAccept},
			},
		},
		{
			text: fmt.Sprintf("oifname %q ip daddr %s ct state established,related accept", bridge, p),
			exprs: []expr.Any{
				&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(bridge)},
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
				&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask[:], Xor: make([]byte, 4)},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: net4[:]},
				&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
				&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
					Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
					Xor:  binaryutil.NativeEndian.PutUint32(0)},
				&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
				&expr.Verdict{Kind: expr.VerdictAccept},
			},
		},
	}
}

// RenderRuleset returns, in nft syntax, the table NATEnsure installs for
// bridge and prefix (with an empty guest set).
func RenderRuleset(bridge string, prefix netip.Prefix) string {
	var b strings.Builder
	fmt.Fprintf(&b, "table ip %s {\n", NATTable)
	fmt.Fprintf(&b, "\tset %s {\n\t\ttype ipv4_addr\n\t}\n\n", NATSet)
	fmt.Fprintf(&b, "\tchain %s {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n", chainPost)
	for _, r := range postroutingRules(bridge) {
		fmt.Fprintf(&b, "\t\t%s\n", r.text)
	}
	fmt.Fprintf(&b, "\t}\n\n\tchain %s {\n\t\ttype filter hook forward priority filter; policy accept;\n", chainFwd)
	for _, r := range forwardRules(bridge, prefix) {
		fmt.Fprintf(&b, "\t\t%s\n", r.text)
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}

// nftErr wraps an nftables failure; a kernel or socket without nf_tables
// becomes the "nftables unavailable" error callers show as is.
func nftErr(what string, err error) error {
	if errors.Is(err, unix.EPROTONOSUPPORT) || errors.Is(err, unix.EAFNOSUPPORT) || errors.Is(err, unix.EOPNOTSUPP) {
		return fmt.Errorf("%s: nftables unavailable: %w; VMs without NAT still work (load the nf_tables module or disable nat)", what, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func natTable() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyIPv4, Name: NATTable}
}

// natSet describes banger's set. The batch-local ID is fixed: a non-zero ID
// keeps the library from bumping its package-global counter, which would be
// a data race between concurrent calls, and each batch holds this one set.
func natSet(t *nftables.Table) *nftables.Set {
	return &nftables.Set{Table: t, ID: 1, Name: NATSet, KeyType: nftables.TypeIPAddr}
}

// NATEnsure installs banger's table, guest set and chains (replacing the
// chains' rules, keeping the set's members) and enables IPv4 forwarding. It
// reports whether it had to turn forwarding on, so the caller can log it.
func NATEnsure(bridge string, prefix netip.Prefix) (forwardEnabled bool, err error) {
	if err := ValidateIfName(bridge); err != nil {
		return false, fmt.Errorf("ensuring nat: %w", err)
	}
	if err := CheckPrefix(prefix); err != nil {
		return false, fmt.Errorf("ensuring nat: %w", err)
	}
	c, err := nftables.New()
	if err != nil {
		return false, nftErr("ensuring nat table", err)
	}
	t := c.AddTable(natTable())
	if err := c.AddSet(natSet(t), nil); err != nil {
		return false, fmt.Errorf("ensuring nat set: %w", err)
	}
	accept := nftables.ChainPolicyAccept
	post := c.AddChain(&nftables.Chain{
		Name: chainPost, Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookRef(unix.NF_INET_POST_ROUTING), Priority: nftables.ChainPriorityRef(100), Policy: &accept,
	})
	fwd := c.AddChain(&nftables.Chain{
		Name: chainFwd, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookRef(unix.NF_INET_FORWARD), Priority: nftables.ChainPriorityRef(0), Policy: &accept,
	})
	c.FlushChain(post)
	c.FlushChain(fwd)
	for _, r := range postroutingRules(bridge) {
		c.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: r.exprs})
	}
	for _, r := range forwardRules(bridge, prefix) {
		c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: r.exprs})
	}
	if err := c.Flush(); err != nil {
		return false, nftErr(fmt.Sprintf("installing nftables table ip %s", NATTable), err)
	}
	return enableForwarding()
}

func enableForwarding() (bool, error) {
	b, err := os.ReadFile(ipForwardPS)
	if err != nil {
		return false, fmt.Errorf("reading %s: %w", ipForwardPS, err)
	}
	if strings.TrimSpace(string(b)) == "1" {
		return false, nil
	}
	if err := os.WriteFile(ipForwardPS, []byte("1\n"), 0o644); err != nil {
		return false, fmt.Errorf("enabling ipv4 forwarding in %s: %w", ipForwardPS, err)
	}
	return true, nil
}

func element(addr netip.Addr) ([]nftables.SetElement, error) {
	if !addr.Unmap().Is4() {
		return nil, fmt.Errorf("address %s is not IPv4", addr)
	}
	k := addr.Unmap().As4()
	return []nftables.SetElement{{Key: k[:]}}, nil
}

// NATAdd puts a guest address in the NAT set (adding a member twice is fine).
func NATAdd(addr netip.Addr) error {
	el, err := element(addr)
	if err != nil {
		return fmt.Errorf("enabling nat: %w", err)
	}
	c, err := nftables.New()
	if err != nil {
		return nftErr("enabling nat for "+addr.String(), err)
	}
	if err := c.SetAddElements(natSet(natTable()), el); err != nil {
		return fmt.Errorf("enabling nat for %s: %w", addr, err)
	}
	if err := c.Flush(); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("enabling nat for %s: table ip %s is not set up (ensure nat first): %w", addr, NATTable, err)
		}
		return nftErr("enabling nat for "+addr.String(), err)
	}
	return nil
}

// NATRemove takes a guest address out of the NAT set. An address that is not
// a member, or a missing table, is not an error.
func NATRemove(addr netip.Addr) error {
	el, err := element(addr)
	if err != nil {
		return fmt.Errorf("disabling nat: %w", err)
	}
	c, err := nftables.New()
	if err != nil {
		return nftErr("disabling nat for "+addr.String(), err)
	}
	if err := c.SetDeleteElements(natSet(natTable()), el); err != nil {
		return fmt.Errorf("disabling nat for %s: %w", addr, err)
	}
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return nftErr("disabling nat for "+addr.String(), err)
	}
	return nil
}

// NATTeardown deletes banger's table; a missing table is not an error.
// Forwarding is left as it is: other software may rely on it.
func NATTeardown() error {
	c, err := nftables.New()
	if err != nil {
		return nftErr("removing nat table", err)
	}
	c.DelTable(natTable())
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return nftErr(fmt.Sprintf("removing nftables table ip %s", NATTable), err)
	}
	return nil
}

// NATMembers lists the guest addresses in the NAT set; none when the table
// does not exist.
func NATMembers() ([]netip.Addr, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, nftErr("listing nat members", err)
	}
	// GetSetElements flattens the kernel's errno, so look for the table
	// first rather than match "not found" in its text.
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return nil, nftErr("listing nat members: listing tables", err)
	}
	if !slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == NATTable }) {
		return nil, nil
	}
	els, err := c.GetSetElements(natSet(natTable()))
	if err != nil {
		return nil, nftErr("listing nat members", err)
	}
	var out []netip.Addr
	for _, e := range els {
		if e.IntervalEnd {
			continue
		}
		if a, ok := netip.AddrFromSlice(e.Key); ok {
			out = append(out, a)
		}
	}
	return out, nil
}
