package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"banger/internal/dns"
)

// netState is the daemon's view of the bridge and its DNS server.
type netState struct {
	mu          sync.Mutex
	records     *dns.Records
	server      *dns.Server
	bridgeDNS   bool
	bridgeReady bool
	natReady    bool
	loopbackErr error
}

func (d *Daemon) initDNS() {
	d.net.records = dns.NewRecords()
	h := dns.NewWakingHandler(dns.NewHandler(d.net.records, d.cfg.CIDR), d.net.records, d.wakeByName, dnsWakeWait, d.log)
	d.net.server = dns.NewServer(h, d.log)
	if err := d.net.server.Listen(d.cfg.DNSListenAddr.String()); err != nil {
		d.net.loopbackErr = err
		d.log.Warn("dns listener unavailable", "addr", d.cfg.DNSListenAddr.String(), "err", err)
	}
}

// listenOnBridge serves DNS on the bridge address when the bridge already
// exists (after a daemon restart), so NAME.vm answers there before any VM
// starts.
func (d *Daemon) listenOnBridge() {
	d.net.mu.Lock()
	defer d.net.mu.Unlock()
	if d.net.bridgeDNS || d.net.server == nil {
		return
	}
	if _, err := os.Stat(filepath.Join("/sys/class/net", d.cfg.BridgeName)); err != nil {
		return
	}
	addr := netip.AddrPortFrom(d.cfg.BridgeIP, d.cfg.DNSListenAddr.Port()).String()
	if err := d.net.server.Listen(addr); err != nil {
		d.log.Warn("dns on bridge address unavailable", "addr", addr, "err", err)
		return
	}
	d.net.bridgeDNS = true
}

func (d *Daemon) dnsAddrs() []string {
	if d.net == nil || d.net.server == nil {
		return nil
	}
	return d.net.server.Addrs()
}

// ensureBridge makes the bridge exist (idempotent) and serves DNS on its
// address once it does.
func (d *Daemon) ensureBridge(ctx context.Context) error {
	d.net.mu.Lock()
	defer d.net.mu.Unlock()
	// Once this daemon has ensured the bridge, a cheap sysfs look says it
	// is still there; the privileged (and, through sudo, costly) ensure
	// runs again only when it went away.
	if d.net.bridgeReady {
		if _, err := os.Stat(filepath.Join("/sys/class/net", d.cfg.BridgeName)); err == nil {
			return nil
		}
		d.net.bridgeReady = false
	}
	created, err := d.host.EnsureBridge(ctx, d.cfg.BridgeName, d.cfg.BridgeIP, d.cfg.CIDR)
	if err != nil {
		return fmt.Errorf("ensuring bridge %s: %w", d.cfg.BridgeName, err)
	}
	if created {
		d.log.Info("created bridge", "bridge", d.cfg.BridgeName, "ip", d.cfg.BridgeIP.String())
		d.net.bridgeDNS = false
		d.reapplyResolver(ctx)
	}
	if !d.net.bridgeDNS && d.net.server != nil {
		addr := netip.AddrPortFrom(d.cfg.BridgeIP, d.cfg.DNSListenAddr.Port()).String()
		if err := d.net.server.Listen(addr); err != nil {
			d.log.Warn("dns on bridge address unavailable", "addr", addr, "err", err)
		} else {
			d.net.bridgeDNS = true
		}
	}
	d.net.bridgeReady = true
	return nil
}

func (d *Daemon) ensureNAT(ctx context.Context) error {
	d.net.mu.Lock()
	defer d.net.mu.Unlock()
	if d.net.natReady {
		return nil
	}
	changed, err := d.host.NATEnsure(ctx, d.cfg.BridgeName, d.cfg.CIDR)
	if err != nil {
		return fmt.Errorf("setting up NAT: %w", err)
	}
	if changed {
		d.log.Info("enabled net.ipv4.ip_forward for NAT")
	}
	d.net.natReady = true
	return nil
}

// tapReady verifies the tap exists, is enslaved to the bridge and is up, so
// Firecracker is never handed a name it would silently create off-bridge.
func tapReady(tap, bridge string) error {
	base := filepath.Join("/sys/class/net", tap)
	if _, err := os.Stat(base); err != nil {
		return fmt.Errorf("tap %s does not exist", tap)
	}
	master, err := os.Readlink(filepath.Join(base, "master"))
	if err != nil || filepath.Base(master) != bridge {
		return fmt.Errorf("tap %s is not enslaved to bridge %s", tap, bridge)
	}
	b, err := os.ReadFile(filepath.Join(base, "flags"))
	if err != nil {
		return fmt.Errorf("reading flags of tap %s: %w", tap, err)
	}
	flags, err := strconv.ParseUint(strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(b)), "0x")), 16, 32)
	if err != nil || flags&1 == 0 {
		return fmt.Errorf("tap %s is not up", tap)
	}
	return nil
}
