-- 0003: published ports. One row per `--publish [ADDR:]HOST:GUEST` of a VM:
-- the daemon listens on host_addr:host_port while the VM runs and tunnels
-- each connection to the guest's loopback guest_port. Rows go with their
-- VM. One host address and port belongs to one VM; the daemon also refuses
-- a port that overlaps a wildcard address (0.0.0.0, ::) of the same port.

CREATE TABLE published_ports (
    vm_id      TEXT    NOT NULL REFERENCES vms (id) ON DELETE CASCADE,
    host_addr  TEXT    NOT NULL,
    host_port  INTEGER NOT NULL CHECK (host_port >= 1 AND host_port <= 65535),
    guest_port INTEGER NOT NULL CHECK (guest_port >= 1 AND guest_port <= 65535),
    created_at INTEGER NOT NULL,
    PRIMARY KEY (host_addr, host_port)
) STRICT;

CREATE INDEX published_ports_vm_id ON published_ports (vm_id);
