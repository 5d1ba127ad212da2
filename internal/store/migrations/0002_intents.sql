-- 0002: intents. One row per multi-step operation in progress (create,
-- start, stop, delete, work-disk grow, image build/register/delete),
-- written before its host work in the same transaction as the state change
-- that starts it and deleted in the one that ends it. A row found at
-- start-up is an operation a killed daemon left half-done; the daemon
-- finishes or undoes it from what is on the host. No foreign keys: the VM
-- or image row may already be gone (a delete), or not yet exist (a build).

CREATE TABLE intents (
    id         INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    vm_id      TEXT    NOT NULL DEFAULT '',
    image_id   TEXT    NOT NULL DEFAULT '',
    op         TEXT    NOT NULL,
    started_at INTEGER NOT NULL,
    data       TEXT    NOT NULL DEFAULT '{}',
    CHECK ((vm_id = '') <> (image_id = ''))
) STRICT;

CREATE INDEX intents_vm_id ON intents (vm_id);
