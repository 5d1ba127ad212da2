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
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// NAT object names (README, design notes): one table per bridge, named
// NATTablePrefix+bridge, holding the guest set and the two chains. The set's
// comment is the owner's record (OwnerMark). Before per-bridge tables banger
// kept one shared table named legacyNATTable; its owner's NATEnsure moves its
// members over and deletes it.
const (
	NATTablePrefix = "banger-"
	NATSet         = "nat_guests"
	legacyNATTable = "banger"
	chainPost      = "postrouting"
	chainFwd       = "forward"
	ipForwardPS    = "/proc/sys/net/ipv4/ip_forward"
)

// NATTableName is the nftables table (family ip) banger keeps for bridge.
func NATTableName(bridge string) string { return NATTablePrefix + bridge }

// isBangerTable says whether an ip table is one of banger's NAT tables.
func isBangerTable(name string) bool {
	return name == legacyNATTable || strings.HasPrefix(name, NATTablePrefix)
}

// natRule is one rule of banger's table, as nft prints it and as netlink
// expressions (and comment); keeping both together keeps RenderRuleset
// honest.
type natRule struct {
	text    string
	exprs   []expr.Any
	comment string
}

func (r natRule) rule(t *nftables.Table, ch *nftables.Chain) *nftables.Rule {
	nr := &nftables.Rule{Table: t, Chain: ch, Exprs: r.exprs}
	if r.comment != "" {
		nr.UserData = userdata.AppendString(nil, userdata.TypeComment, r.comment)
	}
	return nr
}

// ifname pads an interface name the way nft compares it (IFNAMSIZ bytes).
func ifname(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

// postroutingRules carries the owner's record as the masquerade rule's
// comment (the library reads rule comments, not set or table comments).
func postroutingRules(bridge string, uid int) []natRule {
	return []natRule{{
		text:    fmt.Sprintf("ip saddr @%s oifname != %q masquerade comment %q", NATSet, bridge, OwnerMark(uid)),
		comment: OwnerMark(uid),
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
// bridge, prefix and owner uid (with an empty guest set).
func RenderRuleset(bridge string, prefix netip.Prefix, uid int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "table ip %s {\n", NATTableName(bridge))
	fmt.Fprintf(&b, "\tset %s {\n\t\ttype ipv4_addr\n\t}\n\n", NATSet)
	fmt.Fprintf(&b, "\tchain %s {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n", chainPost)
	for _, r := range postroutingRules(bridge, uid) {
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

func ipTable(name string) *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyIPv4, Name: name}
}

// natSet describes a NAT table's guest set. The batch-local ID is fixed: a
// non-zero ID keeps the library from bumping its package-global counter,
// which would be a data race between concurrent calls, and each batch holds
// this one set.
func natSet(t *nftables.Table) *nftables.Set {
	return &nftables.Set{Table: t, ID: 1, Name: NATSet, KeyType: nftables.TypeIPAddr}
}

// ipState is what the NAT functions read before changing anything: the
// names of the IPv4 tables and their chains.
type ipState struct {
	tables map[string]bool
	chains []*nftables.Chain
}

func readIPState(c *nftables.Conn) (ipState, error) {
	ts, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return ipState{}, err
	}
	st := ipState{tables: map[string]bool{}}
	for _, t := range ts {
		st.tables[t.Name] = true
	}
	if st.chains, err = c.ListChainsOfTableFamily(nftables.TableFamilyIPv4); err != nil {
		return ipState{}, err
	}
	return st, nil
}

// chainsOf returns the chains of one table.
func (st ipState) chainsOf(table string) []*nftables.Chain {
	var out []*nftables.Chain
	for _, ch := range st.chains {
		if ch.Table != nil && ch.Table.Name == table {
			out = append(out, ch)
		}
	}
	return out
}

// tableOwner reads the owner record of a NAT table (the comment of its
// postrouting rule); -1 when it has none.
func tableOwner(c *nftables.Conn, st ipState, table string) (int, error) {
	for _, ch := range st.chainsOf(table) {
		if ch.Name != chainPost {
			continue
		}
		rules, err := c.GetRules(ipTable(table), ch)
		if err != nil {
			return -1, err
		}
		for _, r := range rules {
			if s, ok := userdata.GetString(r.UserData, userdata.TypeComment); ok {
				if uid, ok := markOwner(s); ok {
					return uid, nil
				}
			}
		}
	}
	return -1, nil
}

// checkTableOwner reports whether bridge's NAT table exists, refusing
// (ErrNotBanger) one that does not carry uid's record.
func checkTableOwner(what string, c *nftables.Conn, st ipState, bridge string, uid int) (bool, error) {
	name := NATTableName(bridge)
	if !st.tables[name] {
		return false, nil
	}
	owner, err := tableOwner(c, st, name)
	switch {
	case err != nil:
		return true, nftErr(what+": reading the owner of table ip "+name, err)
	case owner < 0:
		return true, fmt.Errorf("%s: %w: table ip %s carries no banger record; left alone", what, ErrNotBanger, name)
	case owner != uid:
		return true, fmt.Errorf("%s: %w: table ip %s belongs to uid %d, not %d; left alone", what, ErrNotBanger, name, owner, uid)
	}
	return true, nil
}

// legacyOurs says whether the shared table of older banger versions exists
// and its rules name no interface but the given bridges: then it is the
// state of those bridges' owner.
func legacyOurs(c *nftables.Conn, st ipState, bridges []string) (bool, error) {
	if !st.tables[legacyNATTable] || len(bridges) == 0 {
		return false, nil
	}
	t := ipTable(legacyNATTable)
	named := 0
	for _, ch := range st.chainsOf(legacyNATTable) {
		rules, err := c.GetRules(t, ch)
		if err != nil {
			return false, err
		}
		for _, r := range rules {
			for i, e := range r.Exprs {
				m, ok := e.(*expr.Meta)
				if !ok || (m.Key != expr.MetaKeyIIFNAME && m.Key != expr.MetaKeyOIFNAME) || i+1 >= len(r.Exprs) {
					continue
				}
				cmp, ok := r.Exprs[i+1].(*expr.Cmp)
				if !ok {
					continue
				}
				if !slices.Contains(bridges, strings.TrimRight(string(cmp.Data), "\x00")) {
					return false, nil
				}
				named++
			}
		}
	}
	return named > 0, nil
}

// members reads the guest addresses of a table's set.
func members(c *nftables.Conn, table string) ([]netip.Addr, error) {
	els, err := c.GetSetElements(natSet(ipTable(table)))
	if err != nil {
		return nil, err
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

// NATEnsure installs bridge's NAT table for uid: the guest set (keeping its
// members) and the chains (replacing their rules), and enables IPv4
// forwarding. A table of that name with another owner's record, or none, is
// refused. The shared table of older versions, when its rules name only
// this bridge, is replaced in the same transaction, its members inside
// prefix carried over. It reports whether it had to turn forwarding on, so
// the caller can log it.
func NATEnsure(bridge string, prefix netip.Prefix, uid int) (forwardEnabled bool, err error) {
	if err := ValidateIfName(bridge); err != nil {
		return false, fmt.Errorf("ensuring nat: %w", err)
	}
	if err := CheckPrefix(prefix); err != nil {
		return false, fmt.Errorf("ensuring nat: %w", err)
	}
	if uid < 0 {
		return false, fmt.Errorf("ensuring nat for bridge %s: bad owner uid %d", bridge, uid)
	}
	what := "ensuring nat for bridge " + bridge
	c, err := nftables.New()
	if err != nil {
		return false, nftErr(what, err)
	}
	st, err := readIPState(c)
	if err != nil {
		return false, nftErr(what+": listing tables", err)
	}
	if _, err := checkTableOwner(what, c, st, bridge, uid); err != nil {
		return false, err
	}
	legacy, err := legacyOurs(c, st, []string{bridge})
	if err != nil {
		return false, nftErr(what+": reading table ip "+legacyNATTable, err)
	}
	var carried []nftables.SetElement
	if legacy {
		old, err := members(c, legacyNATTable)
		if err != nil {
			return false, nftErr(what+": reading the members of table ip "+legacyNATTable, err)
		}
		for _, a := range old {
			if prefix.Masked().Contains(a) {
				k := a.As4()
				carried = append(carried, nftables.SetElement{Key: k[:]})
			}
		}
	}

	t := c.AddTable(ipTable(NATTableName(bridge)))
	if err := c.AddSet(natSet(t), carried); err != nil {
		return false, fmt.Errorf("%s: %w", what, err)
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
	for _, r := range postroutingRules(bridge, uid) {
		c.AddRule(r.rule(t, post))
	}
	for _, r := range forwardRules(bridge, prefix) {
		c.AddRule(r.rule(t, fwd))
	}
	if legacy {
		c.DelTable(ipTable(legacyNATTable))
	}
	if err := c.Flush(); err != nil {
		return false, nftErr(fmt.Sprintf("installing nftables table ip %s", NATTableName(bridge)), err)
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

// NATAdd puts a guest address in the set of bridge's NAT table, which must
// be uid's (adding a member twice is fine). The caller checks that the
// address belongs to the bridge's subnet.
func NATAdd(bridge string, addr netip.Addr, uid int) error {
	el, err := element(addr)
	if err != nil {
		return fmt.Errorf("enabling nat: %w", err)
	}
	what := "enabling nat for " + addr.String()
	name := NATTableName(bridge)
	c, err := nftables.New()
	if err != nil {
		return nftErr(what, err)
	}
	st, err := readIPState(c)
	if err != nil {
		return nftErr(what+": listing tables", err)
	}
	exists, err := checkTableOwner(what, c, st, bridge, uid)
	if err != nil {
		return err
	}
	if !exists {
		return fmt.Errorf("%s: table ip %s is not set up (ensure nat first)", what, name)
	}
	if err := c.SetAddElements(natSet(ipTable(name)), el); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := c.Flush(); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("%s: table ip %s is not set up (ensure nat first): %w", what, name, err)
		}
		return nftErr(what, err)
	}
	return nil
}

// NATRemove takes a guest address out of the set of bridge's NAT table,
// which must be uid's, and out of the shared table of older versions when
// that is this bridge's. An address that is not a member, or a missing
// table, is not an error.
func NATRemove(bridge string, addr netip.Addr, uid int) error {
	el, err := element(addr)
	if err != nil {
		return fmt.Errorf("disabling nat: %w", err)
	}
	what := "disabling nat for " + addr.String()
	c, err := nftables.New()
	if err != nil {
		return nftErr(what, err)
	}
	st, err := readIPState(c)
	if err != nil {
		return nftErr(what+": listing tables", err)
	}
	exists, err := checkTableOwner(what, c, st, bridge, uid)
	if err != nil {
		return err
	}
	legacy, err := legacyOurs(c, st, []string{bridge})
	if err != nil {
		return nftErr(what+": reading table ip "+legacyNATTable, err)
	}
	var from []string
	if exists {
		from = append(from, NATTableName(bridge))
	}
	if legacy {
		from = append(from, legacyNATTable)
	}
	// One batch per table: deleting an element that is not there fails
	// the whole batch with ENOENT.
	for _, name := range from {
		if err := c.SetDeleteElements(natSet(ipTable(name)), el); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
			return nftErr(what+" in table ip "+name, err)
		}
	}
	return nil
}

// NATTeardown deletes every NAT table carrying uid's record, and the shared
// table of older versions when its rules name only bridges (uid's); the
// NAT state of other users is left alone. Nothing to delete is not an
// error. Forwarding is left as it is: other software may rely on it.
func NATTeardown(uid int, bridges []string) error {
	const what = "removing nat tables"
	c, err := nftables.New()
	if err != nil {
		return nftErr(what, err)
	}
	for attempt := 0; ; attempt++ {
		st, err := readIPState(c)
		if err != nil {
			return nftErr(what+": listing tables", err)
		}
		var del []string
		for name := range st.tables {
			if !strings.HasPrefix(name, NATTablePrefix) {
				continue
			}
			owner, err := tableOwner(c, st, name)
			if err != nil {
				return nftErr(what+": reading the owner of table ip "+name, err)
			}
			if owner == uid {
				del = append(del, name)
			}
		}
		legacy, err := legacyOurs(c, st, bridges)
		if err != nil {
			return nftErr(what+": reading table ip "+legacyNATTable, err)
		}
		if legacy {
			del = append(del, legacyNATTable)
		}
		if len(del) == 0 {
			return nil
		}
		slices.Sort(del)
		for _, name := range del {
			c.DelTable(ipTable(name))
		}
		err = c.Flush()
		if err == nil {
			return nil
		}
		// ENOENT: one of them went away meanwhile; look again once.
		if !errors.Is(err, unix.ENOENT) || attempt > 0 {
			return nftErr(fmt.Sprintf("removing nftables tables %s", strings.Join(del, ", ")), err)
		}
	}
}

// NATMembers lists the guest addresses in bridge's NAT table; none when the
// table does not exist.
func NATMembers(bridge string) ([]netip.Addr, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, nftErr("listing nat members", err)
	}
	// GetSetElements flattens the kernel's errno, so look for the table
	// first rather than match "not found" in its text.
	ts, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return nil, nftErr("listing nat members: listing tables", err)
	}
	name := NATTableName(bridge)
	if !slices.ContainsFunc(ts, func(t *nftables.Table) bool { return t.Name == name }) {
		return nil, nil
	}
	out, err := members(c, name)
	if err != nil {
		return nil, nftErr("listing nat members of table ip "+name, err)
	}
	return out, nil
}
