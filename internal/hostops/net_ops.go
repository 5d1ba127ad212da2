package hostops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"sync"

	"banger/internal/network"
)

// BridgePrefix starts every bridge name a privileged op accepts.
const BridgePrefix = "banger"

// tapNameRE is compiled on first use (see stagingRe).
var tapNameRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^bgt-[a-z0-9]{1,11}$`) })

// BridgeArgs names a bridge and, for ensure-bridge, its address and subnet.
type BridgeArgs struct {
	Name   string `json:"name"`
	IP     string `json:"ip,omitempty"`
	Prefix string `json:"prefix,omitempty"`
}

// TapArgs names a tap and, for create-tap, its bridge. The owner is always
// the calling user.
type TapArgs struct {
	Name   string `json:"name"`
	Bridge string `json:"bridge,omitempty"`
}

// NATArgs configures the NAT table for a bridge and subnet.
type NATArgs struct {
	Bridge string `json:"bridge"`
	Prefix string `json:"prefix"`
}

// NATAddrArgs names one guest address.
type NATAddrArgs struct {
	Addr string `json:"addr"`
}

// EnsureBridgeResult says whether the bridge had to be created.
type EnsureBridgeResult struct {
	Created bool `json:"created"`
}

// NATEnsureResult says whether IPv4 forwarding had to be turned on.
type NATEnsureResult struct {
	ForwardEnabled bool `json:"forward_enabled"`
}

func addNetOps(m map[string]opFunc) {
	m["ensure-bridge"] = opEnsureBridge
	m["delete-bridge"] = opDeleteBridge
	m["create-tap"] = opCreateTap
	m["delete-tap"] = opDeleteTap
	m["rename-tap"] = opRenameTap
	m["nat-ensure"] = opNATEnsure
	m["nat-add"] = opNATAdd
	m["nat-remove"] = opNATRemove
	m["nat-teardown"] = opNATTeardown
	m["forward-policy"] = opForwardPolicy
}

// ForwardPolicyResult is the doctor's forward_policy finding.
type ForwardPolicyResult struct {
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
}

// EnsureBridge makes the bridge exist with ip/prefixlen on it and up,
// refusing a subnet that collides with the host's addresses or routes. It
// reports whether the bridge was created.
func (c *Client) EnsureBridge(ctx context.Context, name string, ip netip.Addr, prefix netip.Prefix) (bool, error) {
	var res EnsureBridgeResult
	err := c.call(ctx, "ensure-bridge", BridgeArgs{Name: name, IP: ip.String(), Prefix: prefix.String()}, &res)
	return res.Created, err
}

// DeleteBridge removes the bridge; a missing bridge is fine.
func (c *Client) DeleteBridge(ctx context.Context, name string) error {
	return c.call(ctx, "delete-bridge", BridgeArgs{Name: name}, nil)
}

// CreateTap creates the tap owned by the calling user, enslaved to bridge
// and up.
func (c *Client) CreateTap(ctx context.Context, name, bridge string) error {
	return c.call(ctx, "create-tap", TapArgs{Name: name, Bridge: bridge}, nil)
}

// RenameTapArgs renames a pool tap to a VM's tap name.
type RenameTapArgs struct {
	From string `json:"from"`
	To   string `json:"to"`
}

// RenameTap hands a pre-created pool tap to a VM by renaming it.
func (c *Client) RenameTap(ctx context.Context, from, to string) error {
	return c.call(ctx, "rename-tap", RenameTapArgs{From: from, To: to}, nil)
}

func opRenameTap(ctx context.Context, c Caller, raw json.RawMessage) (any, error) {
	var a RenameTapArgs
	if err := decode("rename-tap", raw, &a); err != nil {
		return nil, err
	}
	if err := checkTapName("rename-tap", a.From); err != nil {
		return nil, err
	}
	if err := checkTapName("rename-tap", a.To); err != nil {
		return nil, err
	}
	return nil, refuseForeign(network.RenameTap(a.From, a.To, c.UID))
}

// DeleteTap removes banger's tap; a missing tap is fine.
func (c *Client) DeleteTap(ctx context.Context, name string) error {
	return c.call(ctx, "delete-tap", TapArgs{Name: name}, nil)
}

// NATEnsure installs the NAT table of the calling user's bridge for exactly
// its subnet and enables IPv4 forwarding, reporting whether forwarding had
// to be turned on (log it).
func (c *Client) NATEnsure(ctx context.Context, bridge string, prefix netip.Prefix) (forwardEnabled bool, err error) {
	var res NATEnsureResult
	err = c.call(ctx, "nat-ensure", NATArgs{Bridge: bridge, Prefix: prefix.String()}, &res)
	return res.ForwardEnabled, err
}

// NATAdd enables NAT for a guest address of the calling user's bridge.
func (c *Client) NATAdd(ctx context.Context, addr netip.Addr) error {
	return c.call(ctx, "nat-add", NATAddrArgs{Addr: addr.String()}, nil)
}

// NATRemove disables NAT for a guest address; one that is not NATed is fine.
func (c *Client) NATRemove(ctx context.Context, addr netip.Addr) error {
	return c.call(ctx, "nat-remove", NATAddrArgs{Addr: addr.String()}, nil)
}

// NATTeardown removes the calling user's NAT tables (and no other user's);
// none is fine.
func (c *Client) NATTeardown(ctx context.Context) error {
	return c.call(ctx, "nat-teardown", struct{}{}, nil)
}

// ForwardPolicy runs the doctor check forward_policy (reading nftables needs
// root): whether another table's forward chain drops the bridge's traffic,
// and the rules to add if so. It changes nothing.
func (c *Client) ForwardPolicy(ctx context.Context, bridge string) (ForwardPolicyResult, error) {
	var res ForwardPolicyResult
	err := c.call(ctx, "forward-policy", BridgeArgs{Name: bridge}, &res)
	return res, err
}

// checkBridgeName checks a bridge name of an op that names itself in its
// errors otherwise (resolver ops).
func checkBridgeName(name string) error {
	if !strings.HasPrefix(name, BridgePrefix) {
		return fmt.Errorf("%w: bridge %q is not banger's: bridge names must start with %q", ErrRefused, name, BridgePrefix)
	}
	if err := network.ValidateIfName(name); err != nil {
		return fmt.Errorf("%w: bridge: %v", ErrRefused, err)
	}
	return nil
}

// checkOpBridge checks the bridge name an op was given.
func checkOpBridge(op, name string) error {
	if !strings.HasPrefix(name, BridgePrefix) {
		return fmt.Errorf("%w: %s: bridge %q is not banger's: bridge names must start with %q", ErrRefused, op, name, BridgePrefix)
	}
	if err := network.ValidateIfName(name); err != nil {
		return fmt.Errorf("%w: %s: bridge: %v", ErrRefused, op, err)
	}
	return nil
}

func checkTapName(op, name string) error {
	if !tapNameRE().MatchString(name) {
		return fmt.Errorf("%w: %s: tap %q is not banger's: tap names must match %s", ErrRefused, op, name, tapNameRE())
	}
	return nil
}

// refuseForeign marks the network package's refusals of an object that is
// not the caller's (network.ErrNotBanger: "<doing what to which object>:
// not banger's: <why>; left alone") as refused.
func refuseForeign(err error) error {
	if errors.Is(err, network.ErrNotBanger) && !errors.Is(err, ErrRefused) {
		return fmt.Errorf("%w: %w", ErrRefused, err)
	}
	return err
}

// callerBridge returns the caller's bridge of that name (one carrying the
// caller's uid record), refusing any other.
func callerBridge(op string, c Caller, name string) (network.Bridge, error) {
	bridges, err := network.OwnedBridges(c.UID)
	if err != nil {
		return network.Bridge{}, fmt.Errorf("%s: finding the bridges of uid %d: %w", op, c.UID, err)
	}
	for _, b := range bridges {
		if b.Name == name {
			return b, nil
		}
	}
	return network.Bridge{}, fmt.Errorf("%w: %s %s: not a banger bridge of uid %d (missing, or not created by banger for this user)", ErrRefused, op, name, c.UID)
}

// guestBridge returns the caller's bridge whose subnet holds addr as a guest
// address: inside the subnet, and neither its network, broadcast or any
// bridge address. Any other address is refused.
func guestBridge(op string, c Caller, addr netip.Addr) (string, error) {
	bridges, err := network.OwnedBridges(c.UID)
	if err != nil {
		return "", fmt.Errorf("%s %s: finding the bridges of uid %d: %w", op, addr, c.UID, err)
	}
	var subnets []string
	for _, b := range bridges {
		for _, p := range b.Addrs {
			subnets = append(subnets, p.Masked().String()+" on "+b.Name)
			if p.Addr() == addr {
				return "", fmt.Errorf("%w: %s %s: it is the address of bridge %s, not a guest's", ErrRefused, op, addr, b.Name)
			}
		}
	}
	for _, b := range bridges {
		for _, p := range b.Addrs {
			m := p.Masked()
			switch {
			case !m.Contains(addr):
				continue
			case addr == m.Addr():
				return "", fmt.Errorf("%w: %s %s: it is the network address of %s on bridge %s, not a guest's", ErrRefused, op, addr, m, b.Name)
			case addr == network.Broadcast(m):
				return "", fmt.Errorf("%w: %s %s: it is the broadcast address of %s on bridge %s, not a guest's", ErrRefused, op, addr, m, b.Name)
			}
			return b.Name, nil
		}
	}
	have := fmt.Sprintf("uid %d has no banger bridge", c.UID)
	if len(subnets) > 0 {
		have = "its subnets: " + strings.Join(subnets, ", ")
	}
	return "", fmt.Errorf("%w: %s %s: not inside the subnet of a banger bridge of uid %d (%s)", ErrRefused, op, addr, c.UID, have)
}

func parseAddr4(what, s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return netip.Addr{}, fmt.Errorf("%w: %s %q is not an IPv4 address", ErrRefused, what, s)
	}
	if a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return netip.Addr{}, fmt.Errorf("%w: %s %s is not a unicast host address", ErrRefused, what, a)
	}
	return a, nil
}

func parsePrefix4(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%w: prefix %q is not a CIDR prefix", ErrRefused, s)
	}
	if err := network.CheckPrefix(p); err != nil {
		return netip.Prefix{}, fmt.Errorf("%w: %v", ErrRefused, err)
	}
	return p, nil
}

func opEnsureBridge(ctx context.Context, c Caller, raw json.RawMessage) (any, error) {
	var a BridgeArgs
	if err := decode("ensure-bridge", raw, &a); err != nil {
		return nil, err
	}
	if err := checkOpBridge("ensure-bridge", a.Name); err != nil {
		return nil, err
	}
	ip, err := parseAddr4("bridge address", a.IP)
	if err != nil {
		return nil, err
	}
	prefix, err := parsePrefix4(a.Prefix)
	if err != nil {
		return nil, err
	}
	p := prefix.Masked()
	if !p.Contains(ip) || ip == p.Addr() || ip == network.Broadcast(p) {
		return nil, fmt.Errorf("%w: ensure-bridge %s: bridge address %s is not a host address of %s", ErrRefused, a.Name, ip, p)
	}
	if err := network.CheckCIDR(p, a.Name); err != nil {
		return nil, fmt.Errorf("%w: ensure-bridge %s: %v", ErrRefused, a.Name, err)
	}
	created, err := network.EnsureBridge(a.Name, ip, p, c.UID)
	if err != nil {
		return nil, refuseForeign(err)
	}
	return EnsureBridgeResult{Created: created}, nil
}

func opDeleteBridge(ctx context.Context, c Caller, raw json.RawMessage) (any, error) {
	var a BridgeArgs
	if err := decode("delete-bridge", raw, &a); err != nil {
		return nil, err
	}
	if a.IP != "" || a.Prefix != "" {
		return nil, fmt.Errorf("%w: delete-bridge takes only a name", ErrRefused)
	}
	if err := checkOpBridge("delete-bridge", a.Name); err != nil {
		return nil, err
	}
	return nil, refuseForeign(network.DeleteBridge(a.Name, c.UID))
}

func opCreateTap(ctx context.Context, c Caller, raw json.RawMessage) (any, error) {
	var a TapArgs
	if err := decode("create-tap", raw, &a); err != nil {
		return nil, err
	}
	if err := checkTapName("create-tap", a.Name); err != nil {
		return nil, err
	}
	if err := checkOpBridge("create-tap", a.Bridge); err != nil {
		return nil, err
	}
	if c.UID < 0 || c.GID < 0 {
		return nil, fmt.Errorf("%w: create-tap %s: bad caller %d:%d", ErrRefused, a.Name, c.UID, c.GID)
	}
	return nil, refuseForeign(network.CreateTap(a.Name, a.Bridge, c.UID, c.GID))
}

func opDeleteTap(ctx context.Context, c Caller, raw json.RawMessage) (any, error) {
	var a TapArgs
	if err := decode("delete-tap", raw, &a); err != nil {
		return nil, err
	}
	if a.Bridge != "" {
		return nil, fmt.Errorf("%w: delete-tap takes only a name", ErrRefused)
	}
	if err := checkTapName("delete-tap", a.Name); err != nil {
		return nil, err
	}
	return nil, refuseForeign(network.DeleteTap(a.Name, c.UID))
}

// opNATEnsure installs NAT only for exactly the subnet of one of the
// caller's bridges.
func opNATEnsure(ctx context.Context, c Caller, raw json.RawMessage) (any, error) {
	var a NATArgs
	if err := decode("nat-ensure", raw, &a); err != nil {
		return nil, err
	}
	if err := checkOpBridge("nat-ensure", a.Bridge); err != nil {
		return nil, err
	}
	prefix, err := parsePrefix4(a.Prefix)
	if err != nil {
		return nil, err
	}
	b, err := callerBridge("nat-ensure", c, a.Bridge)
	if err != nil {
		return nil, err
	}
	// The subnet, however it is written (the daemon passes its configured
	// cidr as is).
	prefix = prefix.Masked()
	var have []string
	found := false
	for _, p := range b.Addrs {
		have = append(have, p.Masked().String())
		found = found || p.Masked() == prefix
	}
	if !found {
		if len(have) == 0 {
			have = []string{"none"}
		}
		return nil, fmt.Errorf("%w: nat-ensure %s: %s is not the subnet of bridge %s (its subnets: %s)", ErrRefused, a.Bridge, prefix, a.Bridge, strings.Join(have, ", "))
	}
	changed, err := network.NATEnsure(a.Bridge, prefix, c.UID)
	if err != nil {
		return nil, refuseForeign(err)
	}
	return NATEnsureResult{ForwardEnabled: changed}, nil
}

func opNATAdd(ctx context.Context, c Caller, raw json.RawMessage) (any, error) {
	var a NATAddrArgs
	if err := decode("nat-add", raw, &a); err != nil {
		return nil, err
	}
	addr, err := parseAddr4("guest address", a.Addr)
	if err != nil {
		return nil, err
	}
	bridge, err := guestBridge("nat-add", c, addr)
	if err != nil {
		return nil, err
	}
	return nil, refuseForeign(network.NATAdd(bridge, addr, c.UID))
}

func opNATRemove(ctx context.Context, c Caller, raw json.RawMessage) (any, error) {
	var a NATAddrArgs
	if err := decode("nat-remove", raw, &a); err != nil {
		return nil, err
	}
	addr, err := parseAddr4("guest address", a.Addr)
	if err != nil {
		return nil, err
	}
	bridge, err := guestBridge("nat-remove", c, addr)
	if err != nil {
		return nil, err
	}
	return nil, refuseForeign(network.NATRemove(bridge, addr, c.UID))
}

// opNATTeardown removes the caller's NAT tables (found by their uid
// record), never another user's.
func opNATTeardown(ctx context.Context, c Caller, raw json.RawMessage) (any, error) {
	var a struct{}
	if err := decode("nat-teardown", raw, &a); err != nil {
		return nil, err
	}
	bridges, err := network.OwnedBridges(c.UID)
	if err != nil {
		return nil, fmt.Errorf("nat-teardown: finding the bridges of uid %d: %w", c.UID, err)
	}
	var names []string
	for _, b := range bridges {
		names = append(names, b.Name)
	}
	return nil, refuseForeign(network.NATTeardown(c.UID, names))
}

func opForwardPolicy(ctx context.Context, c Caller, raw json.RawMessage) (any, error) {
	var a BridgeArgs
	if err := decode("forward-policy", raw, &a); err != nil {
		return nil, err
	}
	if a.IP != "" || a.Prefix != "" {
		return nil, fmt.Errorf("%w: forward-policy takes only a name", ErrRefused)
	}
	if err := checkOpBridge("forward-policy", a.Name); err != nil {
		return nil, err
	}
	ok, detail, fix, err := network.ForwardPolicy(a.Name)
	if err != nil {
		return nil, err
	}
	return ForwardPolicyResult{OK: ok, Detail: detail, Fix: fix}, nil
}
