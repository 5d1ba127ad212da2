package store

import (
	"context"
	"database/sql"
	"fmt"
	"net/netip"
)

// Published is one published port of a VM: while the VM runs, the daemon
// listens on HostAddr:HostPort and tunnels each connection to the guest's
// loopback GuestPort.
type Published struct {
	VMID      string
	HostAddr  string // an IP address; the daemon fills in 127.0.0.1 when none is given
	HostPort  int
	GuestPort int
}

// HostAddrPort is where the daemon listens for p, "127.0.0.1:8080" or
// "[::1]:8080".
func (p Published) HostAddrPort() string {
	a, err := netip.ParseAddr(p.HostAddr)
	if err != nil {
		return fmt.Sprintf("%s:%d", p.HostAddr, p.HostPort)
	}
	return netip.AddrPortFrom(a, uint16(p.HostPort)).String()
}

func validPort(n int) bool { return n >= 1 && n <= 65535 }

// Publish records p. A host port that another row already holds on the
// same address, or on a wildcard address that overlaps it (0.0.0.0 or ::
// on either side), is an error wrapping ErrConflict that names the VM
// holding it.
func (t *Tx) Publish(p Published) error {
	a, err := netip.ParseAddr(p.HostAddr)
	if err != nil || p.VMID == "" || !validPort(p.HostPort) || !validPort(p.GuestPort) {
		return fmt.Errorf("publishing %s:%d -> %d: need a vm, an IP address and ports 1 to 65535", p.HostAddr, p.HostPort, p.GuestPort)
	}
	p.HostAddr = a.Unmap().String()
	rows, err := t.tx.QueryContext(t.ctx, `SELECT p.vm_id, v.name, p.host_addr, p.guest_port FROM published_ports p
		JOIN vms v ON v.id = p.vm_id WHERE p.host_port = ?`, p.HostPort)
	if err != nil {
		return fmt.Errorf("publishing host port %d: %w", p.HostPort, err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			vmID, name, addr string
			guest            int
		)
		if err := rows.Scan(&vmID, &name, &addr, &guest); err != nil {
			return fmt.Errorf("publishing host port %d: %w", p.HostPort, err)
		}
		if overlaps(addr, p.HostAddr) {
			held := Published{HostAddr: addr, HostPort: p.HostPort}
			return conflictf("host port %s is already published by vm %s (to its port %d)", held.HostAddrPort(), name, guest)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("publishing host port %d: %w", p.HostPort, err)
	}
	rows.Close()
	if _, err := t.tx.ExecContext(t.ctx, `INSERT INTO published_ports (vm_id, host_addr, host_port, guest_port, created_at) VALUES (?, ?, ?, ?, ?)`,
		p.VMID, p.HostAddr, p.HostPort, p.GuestPort, t.now.UnixNano()); err != nil {
		if c, ok := asConstraint(err); ok && c.foreignKey {
			return notFoundf("vm %s not found", p.VMID)
		}
		return fmt.Errorf("publishing %s for vm %s: %w", p.HostAddrPort(), p.VMID, err)
	}
	return nil
}

// overlaps reports whether listeners on a and b with one port would clash.
func overlaps(a, b string) bool {
	if a == b {
		return true
	}
	pa, errA := netip.ParseAddr(a)
	pb, errB := netip.ParseAddr(b)
	return errA == nil && errB == nil && (pa.IsUnspecified() || pb.IsUnspecified())
}

// Unpublish removes the VM's published host port on hostAddr (every address
// when hostAddr is "") and returns what it removed; ErrNotFound when the VM
// publishes no such port.
func (t *Tx) Unpublish(vmID, hostAddr string, hostPort int) ([]Published, error) {
	q := `SELECT vm_id, host_addr, host_port, guest_port FROM published_ports WHERE vm_id = ? AND host_port = ?`
	args := []any{vmID, hostPort}
	if hostAddr != "" {
		if a, err := netip.ParseAddr(hostAddr); err == nil {
			hostAddr = a.Unmap().String()
		}
		q += ` AND host_addr = ?`
		args = append(args, hostAddr)
	}
	gone, err := scanPublished(t.tx.QueryContext(t.ctx, q, args...))
	if err != nil {
		return nil, err
	}
	if len(gone) == 0 {
		what := fmt.Sprint(hostPort)
		if hostAddr != "" {
			what = Published{HostAddr: hostAddr, HostPort: hostPort}.HostAddrPort()
		}
		return nil, notFoundf("host port %s is not published", what)
	}
	for _, p := range gone {
		if _, err := t.tx.ExecContext(t.ctx, `DELETE FROM published_ports WHERE host_addr = ? AND host_port = ?`, p.HostAddr, p.HostPort); err != nil {
			return nil, fmt.Errorf("unpublishing %s of vm %s: %w", p.HostAddrPort(), vmID, err)
		}
	}
	return gone, nil
}

// Published returns the VM's published ports, by host port then address.
func (s *Store) Published(ctx context.Context, vmID string) ([]Published, error) {
	return scanPublished(s.db.QueryContext(calm(ctx), `SELECT vm_id, host_addr, host_port, guest_port FROM published_ports
		WHERE vm_id = ? ORDER BY host_port, host_addr`, vmID))
}

// AllPublished returns every VM's published ports, by VM then host port.
func (s *Store) AllPublished(ctx context.Context) ([]Published, error) {
	return scanPublished(s.db.QueryContext(calm(ctx), `SELECT vm_id, host_addr, host_port, guest_port FROM published_ports
		ORDER BY vm_id, host_port, host_addr`))
}

func scanPublished(rows *sql.Rows, err error) ([]Published, error) {
	if err != nil {
		return nil, fmt.Errorf("listing published ports: %w", err)
	}
	defer rows.Close()
	var out []Published
	for rows.Next() {
		var p Published
		if err := rows.Scan(&p.VMID, &p.HostAddr, &p.HostPort, &p.GuestPort); err != nil {
			return nil, fmt.Errorf("listing published ports: %w", err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing published ports: %w", err)
	}
	return out, nil
}
