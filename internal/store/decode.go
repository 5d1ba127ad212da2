package store

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"strings"
)

// VM states.
const (
	StateCreated   = "created"
	StateStarting  = "starting"
	StateRunning   = "running"
	StateStopping  = "stopping"
	StateStopped   = "stopped"
	StateError     = "error"
	StatePaused    = "paused"
	StateSuspended = "suspended"
)

// ValidState reports whether s is one of the VM states above.
func ValidState(s string) bool {
	switch s {
	case StateCreated, StateStarting, StateRunning, StateStopping, StateStopped, StateError, StatePaused, StateSuspended:
		return true
	}
	return false
}

// Image sources.
const (
	SourceBuilt      = "built"
	SourceRegistered = "registered"
)

// DecodeError is a VM row that could not be decoded: a bad JSON column, an
// unknown state, an address that does not parse. The row is not returned
// half-filled.
type DecodeError struct {
	VM     string // the VM's name, or its ID when the name is empty
	Column string
	Err    error
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("decoding vm %s: column %q: %v", e.VM, e.Column, e.Err)
}

func (e *DecodeError) Unwrap() error { return e.Err }

// vmColumns is the column list every VM query selects, in scan order.
const vmColumns = `id, name, image_id, state, last_error, stop_reason, vcpu, memory_mib,
	disk_bytes, work_disk_bytes, nat, ip, mac, tap, cid, pid, dir, storage, pending,
	created_at, updated_at, started_at, last_used_at`

// scanner is *sql.Row or *sql.Rows.
type scanner interface {
	Scan(dest ...any) error
}

// scanVM reads one row selected with vmColumns. Scan errors are returned as
// they are (sql.ErrNoRows included); anything that scans but does not make a
// valid VM is a *DecodeError.
func scanVM(sc scanner) (VM, error) {
	var (
		vm                                  VM
		nat                                 int64
		ip, storage, pending                string
		cid                                 int64
		created, updated, started, lastUsed sql.NullInt64
	)
	err := sc.Scan(&vm.ID, &vm.Name, &vm.ImageID, &vm.State, &vm.LastError, &vm.StopReason,
		&vm.VCPU, &vm.MemoryMiB, &vm.DiskBytes, &vm.WorkDiskBytes, &nat, &ip, &vm.MAC, &vm.Tap,
		&cid, &vm.PID, &vm.Dir, &storage, &pending, &created, &updated, &started, &lastUsed)
	if err != nil {
		return VM{}, err
	}
	who := vm.Name
	if who == "" {
		who = vm.ID
	}
	fail := func(column string, err error) (VM, error) {
		return VM{}, &DecodeError{VM: who, Column: column, Err: err}
	}
	if !ValidState(vm.State) {
		return fail("state", fmt.Errorf("unknown state %q", vm.State))
	}
	switch nat {
	case 0, 1:
		vm.NAT = nat == 1
	default:
		return fail("nat", fmt.Errorf("boolean is %d, want 0 or 1", nat))
	}
	if vm.IP, err = netip.ParseAddr(ip); err != nil {
		return fail("ip", err)
	}
	if cid < 3 || cid > 1<<32-1 {
		return fail("cid", fmt.Errorf("cid %d is outside 3..4294967295", cid))
	}
	vm.CID = uint32(cid)
	if err := checkObject(storage); err != nil {
		return fail("storage", err)
	}
	vm.Storage = json.RawMessage(storage)
	if err := decodeJSON(pending, &vm.Pending); err != nil {
		return fail("pending", err)
	}
	if len(vm.Pending) == 0 {
		vm.Pending = nil
	}
	if !created.Valid {
		return fail("created_at", fmt.Errorf("missing"))
	}
	if !updated.Valid {
		return fail("updated_at", fmt.Errorf("missing"))
	}
	vm.CreatedAt = nanosToTime(created)
	vm.UpdatedAt = nanosToTime(updated)
	vm.StartedAt = nanosToTime(started)
	vm.LastUsedAt = nanosToTime(lastUsed)
	return vm, nil
}

// checkObject checks that text is one JSON object (a column whose
// contents another package owns and decodes).
func checkObject(text string) error {
	t := strings.TrimSpace(text)
	if t == "" || t == "null" || t[0] != '{' {
		return fmt.Errorf("value is %q, want a JSON object", text)
	}
	var v map[string]json.RawMessage
	dec := json.NewDecoder(strings.NewReader(t))
	if err := dec.Decode(&v); err != nil {
		return fmt.Errorf("invalid JSON: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("invalid JSON: trailing data after the value")
	}
	return nil
}

// decodeJSON unmarshals a JSON column strictly: unknown fields are errors, so
// a column written by a newer build is not silently truncated.
func decodeJSON(text string, v any) error {
	if t := strings.TrimSpace(text); t == "" || t == "null" {
		return fmt.Errorf("value is %q, want a JSON object or array", text)
	}
	dec := json.NewDecoder(strings.NewReader(text))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("invalid JSON: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("invalid JSON: trailing data after the value")
	}
	return nil
}
