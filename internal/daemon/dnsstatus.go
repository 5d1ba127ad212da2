package daemon

import "banger/internal/preflight"

// dnsProblem says why this daemon does not serve DNS on dns_listen_addr
// (another process holds the port), or "" when it does. daemon status,
// doctor and vm create show it; before, it went to the log only.
func (d *Daemon) dnsProblem() string {
	if d.net == nil || d.net.loopbackErr == nil {
		return ""
	}
	return preflight.DNSProblem(d.cfg.DNSListenAddr.String(), d.net.loopbackErr)
}
