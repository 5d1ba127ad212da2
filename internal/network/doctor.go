package network

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// ForwardPolicy is the doctor check `forward_policy`: it looks for a forward
// hook chain in another IPv4 or inet table whose policy is drop (Docker sets
// one) and that does not accept the bridge's traffic. A packet must be
// accepted by every base chain on the hook, so banger's own accept cannot
// help. On a problem it returns ok=false, what it found, and the exact rules
// to add. It never changes anything.
func ForwardPolicy(bridge string) (ok bool, detail, fix string, err error) {
	if err := ValidateIfName(bridge); err != nil {
		return false, "", "", fmt.Errorf("checking forward policy: %w", err)
	}
	c, err := nftables.New()
	if err != nil {
		return false, "", "", nftErr("checking forward policy", err)
	}
	chains, err := c.ListChains()
	if err != nil {
		return false, "", "", nftErr("checking forward policy: listing nftables chains", err)
	}
	var details, fixes []string
	for _, ch := range chains {
		if ch.Table == nil || ch.Hooknum == nil || *ch.Hooknum != unix.NF_INET_FORWARD || ch.Policy == nil || *ch.Policy != nftables.ChainPolicyDrop {
			continue
		}
		fam := ch.Table.Family
		if fam != nftables.TableFamilyIPv4 && fam != nftables.TableFamilyINet {
			continue
		}
		if fam == nftables.TableFamilyIPv4 && isBangerTable(ch.Table.Name) {
			continue
		}
		in, out, err := acceptsBridge(c, chains, ch, bridge, map[string]bool{})
		if err != nil {
			return false, "", "", nftErr("checking forward policy: reading rules of chain "+ch.Name, err)
		}
		if in && out {
			continue
		}
		famName := familyName(fam)
		details = append(details, fmt.Sprintf("chain %s in table %s %s has policy drop and does not accept traffic of bridge %s", ch.Name, famName, ch.Table.Name, bridge))
		fixes = append(fixes, fixFor(chains, ch, bridge)...)
	}
	if len(details) == 0 {
		return true, fmt.Sprintf("no forward chain drops traffic of bridge %s", bridge), "", nil
	}
	return false, strings.Join(details, "; "), strings.Join(fixes, "\n"), nil
}

func familyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyINet:
		return "inet"
	}
	return fmt.Sprintf("family-%d", f)
}

// fixFor renders the rules that let the bridge's traffic through ch: iptables
// commands for an iptables-managed table (Docker's DOCKER-USER chain when it
// exists), nft commands otherwise.
func fixFor(chains []*nftables.Chain, ch *nftables.Chain, bridge string) []string {
	if ch.Table.Family == nftables.TableFamilyIPv4 && ch.Table.Name == "filter" {
		target := ch.Name
		if findChain(chains, ch.Table, "DOCKER-USER") != nil {
			target = "DOCKER-USER"
		}
		return []string{
			fmt.Sprintf("iptables -I %s -i %s -j ACCEPT", target, bridge),
			fmt.Sprintf("iptables -I %s -o %s -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT", target, bridge),
		}
	}
	fam := familyName(ch.Table.Family)
	return []string{
		fmt.Sprintf("nft insert rule %s %s %s iifname %q accept", fam, ch.Table.Name, ch.Name, bridge),
		fmt.Sprintf("nft insert rule %s %s %s oifname %q ct state established,related accept", fam, ch.Table.Name, ch.Name, bridge),
	}
}

func findChain(chains []*nftables.Chain, t *nftables.Table, name string) *nftables.Chain {
	for _, c := range chains {
		if c.Name == name && c.Table != nil && c.Table.Name == t.Name && c.Table.Family == t.Family {
			return c
		}
	}
	return nil
}

// acceptsBridge reports whether ch (or a chain it jumps to) has a rule that
// accepts everything arriving from the bridge (in) and one that accepts at
// least established traffic towards it (out).
func acceptsBridge(c *nftables.Conn, chains []*nftables.Chain, ch *nftables.Chain, bridge string, seen map[string]bool) (in, out bool, err error) {
	if seen[ch.Name] {
		return false, false, nil
	}
	seen[ch.Name] = true
	rules, err := c.GetRules(ch.Table, ch)
	if err != nil {
		return false, false, err
	}
	for _, r := range rules {
		dir, accepts, jump := classify(r.Exprs, bridge)
		if accepts {
			in = in || dir == unix.NFT_META_IIFNAME
			out = out || dir == unix.NFT_META_OIFNAME
		}
		if jump != "" {
			if sub := findChain(chains, ch.Table, jump); sub != nil {
				si, so, err := acceptsBridge(c, chains, sub, bridge, seen)
				if err != nil {
					return false, false, err
				}
				in, out = in || si, out || so
			}
		}
	}
	return in, out, nil
}

// classify reads one rule: whether it is "iifname/oifname BRIDGE accept"
// (a ct state match allowed only for the oifname direction) with nothing
// else that narrows it, and which chain it jumps to.
func classify(exprs []expr.Any, bridge string) (dir uint32, accepts bool, jump string) {
	const (
		loadNone = iota
		loadIfname
		loadCtState
		loadOther
	)
	load, key := loadNone, expr.MetaKey(0)
	matched, narrowed, stateful := false, false, false
	for _, e := range exprs {
		switch v := e.(type) {
		case *expr.Meta:
			load, key = loadOther, v.Key
			if v.Key == expr.MetaKeyIIFNAME || v.Key == expr.MetaKeyOIFNAME {
				load = loadIfname
			}
		case *expr.Ct:
			load = loadOther
			if v.Key == expr.CtKeySTATE {
				load = loadCtState
			}
		case *expr.Payload:
			load = loadOther
		case *expr.Bitwise, *expr.Counter:
		case *expr.Cmp:
			switch {
			case load == loadIfname && v.Op == expr.CmpOpEq && string(bytes.TrimRight(v.Data, "\x00")) == bridge && !matched:
				matched, dir = true, uint32(key)
			case load == loadCtState:
				stateful = true
			default:
				narrowed = true
			}
			load = loadNone
		case *expr.Match:
			if v.Name == "conntrack" || v.Name == "state" {
				stateful = true
			} else {
				narrowed = true
			}
		case *expr.Verdict:
			switch v.Kind {
			case expr.VerdictAccept:
				accepts = matched && !narrowed && (!stateful || dir == unix.NFT_META_OIFNAME)
			case expr.VerdictJump, expr.VerdictGoto:
				jump = v.Chain
			}
		default:
			narrowed = true
		}
	}
	return dir, accepts, jump
}
