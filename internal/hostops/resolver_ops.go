package hostops

import (
	"banger/internal/command"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Resolver kinds `banger dns setup` knows.
const (
	ResolverResolved = "resolved"
	ResolverDnsmasq  = "dnsmasq"
)

// Dnsmasq flavors: the plain dnsmasq service, or the dnsmasq instance
// NetworkManager runs (dns=dnsmasq).
const (
	DnsmasqPlain          = "dnsmasq"
	DnsmasqNetworkManager = "networkmanager"
)

// ResolverDomain is the routing domain banger sets on the bridge link; the
// leading ~ makes resolved route `*.vm` queries there without using the link
// for anything else.
const ResolverDomain = "~vm"

// dnsmasqHeader opens every file banger writes; a file without it is not
// banger's and is never overwritten or removed.
const dnsmasqHeader = "# written by `banger dns setup`; remove with `banger dns setup --revert`"

// resolvectlTimeout bounds one resolvectl call.
const resolvectlTimeout = 15 * time.Second

// ResolverLinkArgs points systemd-resolved's per-link DNS of a banger bridge
// at banger's DNS server on the bridge address.
type ResolverLinkArgs struct {
	Bridge string `json:"bridge"`
	Addr   string `json:"addr,omitempty"`
}

// DnsmasqArgs selects the dnsmasq drop-in and, to write it, the address of
// banger's DNS server.
type DnsmasqArgs struct {
	Flavor string `json:"flavor"`
	Addr   string `json:"addr,omitempty"`
}

// DnsmasqResult names the drop-in file written or removed.
type DnsmasqResult struct {
	Path    string `json:"path"`
	Changed bool   `json:"changed"`
}

// ResolverLinkRevertResult says whether there was a link to revert.
type ResolverLinkRevertResult struct {
	Reverted bool `json:"reverted"`
}

func addResolverOps(m map[string]opFunc) {
	m["resolver-link-apply"] = opResolverLinkApply
	m["resolver-link-revert"] = opResolverLinkRevert
	m["resolver-dnsmasq-apply"] = opDnsmasqApply
	m["resolver-dnsmasq-revert"] = opDnsmasqRevert
}

// ResolverLinkApply runs `resolvectl dns BRIDGE ADDR` and `resolvectl domain
// BRIDGE ~vm`. The bridge must exist and carry addr's IP.
func (c *Client) ResolverLinkApply(ctx context.Context, bridge string, addr netip.AddrPort) error {
	return c.call(ctx, "resolver-link-apply", ResolverLinkArgs{Bridge: bridge, Addr: addr.String()}, nil)
}

// ResolverLinkRevert runs `resolvectl revert BRIDGE`; a bridge that does not
// exist has nothing to revert (resolved forgot it with the link) and reports
// false.
func (c *Client) ResolverLinkRevert(ctx context.Context, bridge string) (bool, error) {
	var res ResolverLinkRevertResult
	err := c.call(ctx, "resolver-link-revert", ResolverLinkArgs{Bridge: bridge}, &res)
	return res.Reverted, err
}

// DnsmasqApply writes banger's dnsmasq drop-in for flavor, forwarding `vm.`
// to addr, and returns its path.
func (c *Client) DnsmasqApply(ctx context.Context, flavor string, addr netip.AddrPort) (DnsmasqResult, error) {
	var res DnsmasqResult
	err := c.call(ctx, "resolver-dnsmasq-apply", DnsmasqArgs{Flavor: flavor, Addr: addr.String()}, &res)
	return res, err
}

// DnsmasqRevert removes banger's dnsmasq drop-in for flavor; a missing file
// is fine (Changed false).
func (c *Client) DnsmasqRevert(ctx context.Context, flavor string) (DnsmasqResult, error) {
	var res DnsmasqResult
	err := c.call(ctx, "resolver-dnsmasq-revert", DnsmasqArgs{Flavor: flavor}, &res)
	return res, err
}

// DnsmasqPath is the drop-in file for a flavor.
func DnsmasqPath(flavor string) (string, error) {
	return dnsmasqPathUnder("/", flavor)
}

func dnsmasqPathUnder(root, flavor string) (string, error) {
	switch flavor {
	case DnsmasqPlain:
		return filepath.Join(root, "etc", "dnsmasq.d", "banger.conf"), nil
	case DnsmasqNetworkManager:
		return filepath.Join(root, "etc", "NetworkManager", "dnsmasq.d", "banger.conf"), nil
	}
	return "", fmt.Errorf("%w: dnsmasq flavor %q is neither %q nor %q", ErrRefused, flavor, DnsmasqPlain, DnsmasqNetworkManager)
}

// DnsmasqLine is the dnsmasq option forwarding `vm.` to banger's server.
func DnsmasqLine(addr netip.AddrPort) string {
	return fmt.Sprintf("server=/vm/%s#%d", addr.Addr(), addr.Port())
}

// HostResolver is what `banger dns setup` found on the host.
type HostResolver struct {
	Kind   string // ResolverResolved or ResolverDnsmasq
	Flavor string // for dnsmasq: DnsmasqPlain or DnsmasqNetworkManager
	Why    string // one line: how it was detected
}

// DetectResolver finds the host's resolver: systemd-resolved when resolvectl
// is on PATH and /run/systemd/resolve exists, otherwise dnsmasq (the
// instance NetworkManager runs when its configuration says dns=dnsmasq).
func DetectResolver() HostResolver {
	return detectResolver("/", command.LookPath)
}

func detectResolver(root string, lookPath func(string) (string, error)) HostResolver {
	rc, lerr := lookPath("resolvectl")
	runDir := filepath.Join(root, "run", "systemd", "resolve")
	_, serr := os.Stat(runDir)
	if lerr == nil && serr == nil {
		return HostResolver{Kind: ResolverResolved, Why: fmt.Sprintf("systemd-resolved (%s, %s)", rc, runDir)}
	}
	why := "no resolvectl on PATH"
	if lerr == nil {
		why = runDir + " does not exist"
	}
	if conf, ok := networkManagerDnsmasq(root); ok {
		return HostResolver{Kind: ResolverDnsmasq, Flavor: DnsmasqNetworkManager, Why: fmt.Sprintf("%s; NetworkManager runs dnsmasq (dns=dnsmasq in %s)", why, conf)}
	}
	return HostResolver{Kind: ResolverDnsmasq, Flavor: DnsmasqPlain, Why: why + "; assuming dnsmasq"}
}

// networkManagerDnsmasq reports the NetworkManager configuration file that
// sets dns=dnsmasq, if any.
func networkManagerDnsmasq(root string) (string, bool) {
	dir := filepath.Join(root, "etc", "NetworkManager")
	files := []string{filepath.Join(dir, "NetworkManager.conf")}
	if more, err := filepath.Glob(filepath.Join(dir, "conf.d", "*.conf")); err == nil {
		files = append(files, more...)
	}
	found := ""
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			line := strings.ReplaceAll(strings.TrimSpace(sc.Text()), " ", "")
			if strings.HasPrefix(line, "dns=") {
				// Later files override earlier ones.
				if line == "dns=dnsmasq" {
					found = f
				} else {
					found = ""
				}
			}
		}
	}
	return found, found != ""
}

// parseDNSAddr checks an IPv4 ADDR:PORT of banger's DNS server.
func parseDNSAddr(s string, loopbackOK bool) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil || !ap.Addr().Is4() {
		return netip.AddrPort{}, fmt.Errorf("%w: dns address %q is not IPv4 ADDR:PORT", ErrRefused, s)
	}
	if ap.Port() == 0 {
		return netip.AddrPort{}, fmt.Errorf("%w: dns address %q has port 0", ErrRefused, s)
	}
	a := ap.Addr()
	if a.IsUnspecified() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) || (a.IsLoopback() && !loopbackOK) {
		return netip.AddrPort{}, fmt.Errorf("%w: dns address %s is not a unicast host address", ErrRefused, a)
	}
	return ap, nil
}

// bridgeHasAddr reports whether the bridge exists and whether ip is on it.
func bridgeHasAddr(name string, ip netip.Addr) (exists, has bool, err error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		if strings.Contains(err.Error(), "no such network interface") {
			return false, false, nil
		}
		return false, false, fmt.Errorf("looking up bridge %s: %w", name, err)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return true, false, fmt.Errorf("reading addresses of bridge %s: %w", name, err)
	}
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		if got, ok := netip.AddrFromSlice(n.IP); ok && got.Unmap() == ip {
			return true, true, nil
		}
	}
	return true, false, nil
}

func resolvectl(ctx context.Context, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, resolvectlTimeout)
	defer cancel()
	if _, err := Run(ctx, "resolvectl", args...); err != nil {
		return fmt.Errorf("running resolvectl: %w", err)
	}
	return nil
}

func opResolverLinkApply(ctx context.Context, c Caller, raw json.RawMessage) (any, error) {
	var a ResolverLinkArgs
	if err := decode("resolver-link-apply", raw, &a); err != nil {
		return nil, err
	}
	if err := checkBridgeName(a.Bridge); err != nil {
		return nil, err
	}
	ap, err := parseDNSAddr(a.Addr, false)
	if err != nil {
		return nil, err
	}
	exists, has, err := bridgeHasAddr(a.Bridge, ap.Addr())
	if err != nil {
		return nil, err
	}
	if !exists {
		return nil, fmt.Errorf("bridge %s does not exist yet; bangerd applies the resolver settings when it creates the bridge", a.Bridge)
	}
	if !has {
		return nil, fmt.Errorf("%w: address %s is not on bridge %s: resolved must be pointed at banger's DNS server on the bridge address", ErrRefused, ap.Addr(), a.Bridge)
	}
	if err := resolvectl(ctx, "dns", a.Bridge, ap.String()); err != nil {
		return nil, err
	}
	if err := resolvectl(ctx, "domain", a.Bridge, ResolverDomain); err != nil {
		return nil, err
	}
	return nil, nil
}

func opResolverLinkRevert(ctx context.Context, c Caller, raw json.RawMessage) (any, error) {
	var a ResolverLinkArgs
	if err := decode("resolver-link-revert", raw, &a); err != nil {
		return nil, err
	}
	if err := checkBridgeName(a.Bridge); err != nil {
		return nil, err
	}
	if a.Addr != "" {
		return nil, fmt.Errorf("%w: resolver-link-revert takes only a bridge", ErrRefused)
	}
	if _, err := net.InterfaceByName(a.Bridge); err != nil {
		return ResolverLinkRevertResult{}, nil
	}
	if err := resolvectl(ctx, "revert", a.Bridge); err != nil {
		return nil, err
	}
	return ResolverLinkRevertResult{Reverted: true}, nil
}

func opDnsmasqApply(ctx context.Context, c Caller, raw json.RawMessage) (any, error) {
	var a DnsmasqArgs
	if err := decode("resolver-dnsmasq-apply", raw, &a); err != nil {
		return nil, err
	}
	ap, err := parseDNSAddr(a.Addr, true)
	if err != nil {
		return nil, err
	}
	return writeDnsmasq("/", a.Flavor, ap)
}

func opDnsmasqRevert(ctx context.Context, c Caller, raw json.RawMessage) (any, error) {
	var a DnsmasqArgs
	if err := decode("resolver-dnsmasq-revert", raw, &a); err != nil {
		return nil, err
	}
	if a.Addr != "" {
		return nil, fmt.Errorf("%w: resolver-dnsmasq-revert takes only a flavor", ErrRefused)
	}
	return removeDnsmasq("/", a.Flavor)
}

// dnsmasqContent is the whole drop-in banger writes.
func dnsmasqContent(addr netip.AddrPort) []byte {
	return []byte(dnsmasqHeader + "\n" + DnsmasqLine(addr) + "\n")
}

// ownedDnsmasq reads path and reports whether it exists and is banger's.
func ownedDnsmasq(path string) (exists bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading %s: %w", path, err)
	}
	if !bytes.HasPrefix(b, []byte(dnsmasqHeader+"\n")) {
		return true, fmt.Errorf("%w: %s exists and was not written by banger; move it away or add the line yourself", ErrRefused, path)
	}
	return true, nil
}

func writeDnsmasq(root, flavor string, addr netip.AddrPort) (DnsmasqResult, error) {
	path, err := dnsmasqPathUnder(root, flavor)
	if err != nil {
		return DnsmasqResult{}, err
	}
	if _, err := ownedDnsmasq(path); err != nil {
		return DnsmasqResult{}, err
	}
	want := dnsmasqContent(addr)
	if b, err := os.ReadFile(path); err == nil && bytes.Equal(b, want) {
		return DnsmasqResult{Path: path}, nil
	}
	dir := filepath.Dir(path)
	if fi, err := os.Lstat(dir); err != nil || !fi.IsDir() {
		return DnsmasqResult{}, fmt.Errorf("%s is not a directory: is %s installed?", dir, flavorName(flavor))
	}
	tmp, err := os.CreateTemp(dir, ".banger.conf.*")
	if err != nil {
		return DnsmasqResult{}, fmt.Errorf("writing %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(want); err != nil {
		tmp.Close()
		return DnsmasqResult{}, fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return DnsmasqResult{}, fmt.Errorf("chmod %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return DnsmasqResult{}, fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return DnsmasqResult{}, fmt.Errorf("installing %s: %w", path, err)
	}
	return DnsmasqResult{Path: path, Changed: true}, nil
}

func removeDnsmasq(root, flavor string) (DnsmasqResult, error) {
	path, err := dnsmasqPathUnder(root, flavor)
	if err != nil {
		return DnsmasqResult{}, err
	}
	exists, err := ownedDnsmasq(path)
	if err != nil || !exists {
		return DnsmasqResult{Path: path}, err
	}
	if err := os.Remove(path); err != nil {
		return DnsmasqResult{}, fmt.Errorf("removing %s: %w", path, err)
	}
	return DnsmasqResult{Path: path, Changed: true}, nil
}

func flavorName(flavor string) string {
	if flavor == DnsmasqNetworkManager {
		return "NetworkManager"
	}
	return "dnsmasq"
}

// ResolverSetupFile is the record `banger dns setup --apply` leaves in the
// state directory; bangerd reads it to re-apply resolved's link settings
// when it re-creates the bridge.
const ResolverSetupFile = "dns-setup.json"

// ResolverSetup is what `banger dns setup --apply` did.
type ResolverSetup struct {
	Resolver  string    `json:"resolver"`         // ResolverResolved or ResolverDnsmasq
	Bridge    string    `json:"bridge,omitempty"` // resolved: the link
	Addr      string    `json:"addr"`             // the DNS server address applied
	Flavor    string    `json:"flavor,omitempty"` // dnsmasq: DnsmasqPlain or DnsmasqNetworkManager
	File      string    `json:"file,omitempty"`   // dnsmasq: the drop-in written
	AppliedAt time.Time `json:"applied_at"`
}

// LoadResolverSetup reads the record in stateDir; ok is false when there
// is none.
func LoadResolverSetup(stateDir string) (rec ResolverSetup, ok bool, err error) {
	path := filepath.Join(stateDir, ResolverSetupFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return ResolverSetup{}, false, nil
	}
	if err != nil {
		return ResolverSetup{}, false, fmt.Errorf("reading %s: %w", path, err)
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return ResolverSetup{}, false, fmt.Errorf("reading %s: %w; remove it and run `banger dns setup --apply` again", path, err)
	}
	switch rec.Resolver {
	case ResolverResolved, ResolverDnsmasq:
	default:
		return ResolverSetup{}, false, fmt.Errorf("reading %s: unknown resolver %q; remove it and run `banger dns setup --apply` again", path, rec.Resolver)
	}
	return rec, true, nil
}

// SaveResolverSetup writes the record into stateDir (mode 0600).
func SaveResolverSetup(stateDir string, rec ResolverSetup) error {
	path := filepath.Join(stateDir, ResolverSetupFile)
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding %s: %w", path, err)
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", stateDir, err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// RemoveResolverSetup deletes the record; a missing one is fine.
func RemoveResolverSetup(stateDir string) error {
	path := filepath.Join(stateDir, ResolverSetupFile)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing %s: %w", path, err)
	}
	return nil
}
