-- 0001: images and VMs.
-- Times are unix nanoseconds (UTC); NULL means "never" where a time is optional.
-- Booleans are INTEGER 0/1. JSON columns are TEXT and are validated by the Go
-- decoder, not by CHECK constraints, so that adding a field never needs a
-- table rebuild.

CREATE TABLE images (
    id            TEXT    NOT NULL PRIMARY KEY,
    name          TEXT    NOT NULL UNIQUE,
    rootfs_path   TEXT    NOT NULL,
    kernel_path   TEXT    NOT NULL DEFAULT '',
    initrd_path   TEXT    NOT NULL DEFAULT '',
    modules_dir   TEXT    NOT NULL DEFAULT '',
    size_bytes    INTEGER NOT NULL DEFAULT 0,
    packages_hash TEXT    NOT NULL DEFAULT '',
    source        TEXT    NOT NULL,
    created_at    INTEGER NOT NULL
) STRICT;

CREATE TABLE vms (
    id              TEXT    NOT NULL PRIMARY KEY,
    name            TEXT    NOT NULL UNIQUE,
    image_id        TEXT    NOT NULL REFERENCES images (id) ON DELETE RESTRICT,
    state           TEXT    NOT NULL,
    last_error      TEXT    NOT NULL DEFAULT '',
    stop_reason     TEXT    NOT NULL DEFAULT '',
    vcpu            INTEGER NOT NULL,
    memory_mib      INTEGER NOT NULL,
    disk_bytes      INTEGER NOT NULL,
    work_disk_bytes INTEGER NOT NULL,
    nat             INTEGER NOT NULL DEFAULT 0 CHECK (nat IN (0, 1)),
    ip              TEXT    NOT NULL UNIQUE,
    mac             TEXT    NOT NULL UNIQUE,
    tap             TEXT    NOT NULL UNIQUE,
    cid             INTEGER NOT NULL UNIQUE CHECK (cid >= 3 AND cid <= 4294967295),
    pid             INTEGER NOT NULL DEFAULT 0,
    dir             TEXT    NOT NULL DEFAULT '',
    storage         TEXT    NOT NULL DEFAULT '{}',
    pending         TEXT    NOT NULL DEFAULT '[]',
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    started_at      INTEGER,
    last_used_at    INTEGER
) STRICT;

CREATE INDEX vms_image_id ON vms (image_id);
CREATE INDEX vms_created_name ON vms (created_at, name);
