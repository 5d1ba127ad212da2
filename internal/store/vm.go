package store

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// VM is one row of the vms table.
type VM struct {
	ID            string // 10 lowercase hex chars (NewID); the tap is "bgt-"+ID
	Name          string // unique
	ImageID       string // images.id; an image cannot be deleted while a VM uses it
	State         string // one of the State* constants; anything else fails decode
	LastError     string
	StopReason    string
	VCPU          int
	MemoryMiB     int
	DiskBytes     int64
	WorkDiskBytes int64
	NAT           bool
	IP            netip.Addr // unique, allocated by CreateVM
	MAC           string     // unique, allocated by CreateVM
	Tap           string     // unique, set by CreateVM
	CID           uint32     // unique, >= 3, allocated by CreateVM
	PID           int
	Dir           string
	Storage       json.RawMessage // JSON column "storage": the storage package's state, opaque here ("{}" when empty)
	Pending       []string        // JSON column "pending": changes that apply at next start, e.g. "vcpu", "memory"
	CreatedAt     time.Time
	UpdatedAt     time.Time
	StartedAt     time.Time // zero when never started
	LastUsedAt    time.Time // zero when never used
}

// Allocation is what CreateVM assigns inside its transaction.
type Allocation struct {
	IP  netip.Addr
	MAC string
	CID uint32
}

// Used is what is already taken, computed inside the same transaction.
type Used struct {
	IPs  map[netip.Addr]bool
	CIDs map[uint32]bool
	MACs map[string]bool
}

// AllocFunc picks a free allocation given what is used.
type AllocFunc func(Used) (Allocation, error)

// TapName is the tap device name of the VM with the given ID.
func TapName(id string) string { return "bgt-" + id }

// vmWrite is a VM's columns converted for storage.
type vmWrite struct {
	storage, pending                    string
	created, updated, started, lastUsed sql.NullInt64
}

// encodeVM validates vm's mutable fields and converts them for storage.
func encodeVM(vm *VM, now time.Time) (vmWrite, error) {
	var w vmWrite
	if vm.Name == "" {
		return w, errors.New("empty vm name")
	}
	if !ValidState(vm.State) {
		return w, fmt.Errorf("unknown state %q", vm.State)
	}
	st, err := storageJSON(vm.Storage)
	if err != nil {
		return w, err
	}
	pending := vm.Pending
	if pending == nil {
		pending = []string{}
	}
	pd, err := json.Marshal(pending)
	if err != nil {
		return w, fmt.Errorf("encoding pending: %w", err)
	}
	w.storage, w.pending = st, string(pd)
	for _, f := range []struct {
		dst  *sql.NullInt64
		t    time.Time
		name string
	}{
		{&w.created, vm.CreatedAt, "created_at"},
		{&w.updated, now, "updated_at"},
		{&w.started, vm.StartedAt, "started_at"},
		{&w.lastUsed, vm.LastUsedAt, "last_used_at"},
	} {
		if *f.dst, err = timeToNanos(f.t); err != nil {
			return w, fmt.Errorf("%s: %w", f.name, err)
		}
	}
	return w, nil
}

// CreateVM inserts vm, filling IP, MAC and CID from alloc and Tap from the
// ID, in one transaction under the write mutex. An empty ID is filled with
// NewID, an empty State with StateCreated, a zero CreatedAt with now. A taken
// name is an error wrapping ErrConflict that names the VM; an unknown image
// wraps ErrNotFound. vm is only changed when the insert commits.
func (s *Store) CreateVM(ctx context.Context, vm *VM, alloc AllocFunc) error {
	return s.Write(ctx, func(t *Tx) error { return t.CreateVM(vm, alloc) })
}

// CreateVM is Store.CreateVM inside a transaction.
func (t *Tx) CreateVM(vm *VM, alloc AllocFunc) error {
	if vm == nil || alloc == nil {
		return errors.New("creating vm: nil vm or allocator")
	}
	ctx, tx := t.ctx, t.tx
	v := *vm
	if v.ID == "" {
		v.ID = NewID()
	}
	if !validID(v.ID) {
		return fmt.Errorf("creating vm %q: id %q is not 10 lowercase hex characters", v.Name, v.ID)
	}
	if v.ImageID == "" {
		return fmt.Errorf("creating vm %q: empty image id", v.Name)
	}
	if v.State == "" {
		v.State = StateCreated
	}
	now := t.now
	if v.CreatedAt.IsZero() {
		v.CreatedAt = now
	}
	w, err := encodeVM(&v, now)
	if err != nil {
		return fmt.Errorf("creating vm %q: %w", v.Name, err)
	}

	var other string
	switch err := tx.QueryRowContext(ctx, `SELECT id FROM vms WHERE name = ?`, v.Name).Scan(&other); {
	case err == nil:
		return conflictf("vm name %q is already taken (by vm %s)", v.Name, other)
	case !errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("creating vm %q: checking name: %w", v.Name, err)
	}
	var one int
	switch err := tx.QueryRowContext(ctx, `SELECT 1 FROM images WHERE id = ?`, v.ImageID).Scan(&one); {
	case errors.Is(err, sql.ErrNoRows):
		return notFoundf("creating vm %q: image %s not found", v.Name, v.ImageID)
	case err != nil:
		return fmt.Errorf("creating vm %q: checking image: %w", v.Name, err)
	}

	used, err := usedAllocations(ctx, tx)
	if err != nil {
		return fmt.Errorf("creating vm %q: %w", v.Name, err)
	}
	a, err := alloc(used)
	if err != nil {
		return fmt.Errorf("allocating addresses for vm %q: %w", v.Name, err)
	}
	switch {
	case !a.IP.IsValid():
		return fmt.Errorf("allocating addresses for vm %q: allocator returned no ip", v.Name)
	case a.MAC == "":
		return fmt.Errorf("allocating addresses for vm %q: allocator returned no mac", v.Name)
	case a.CID < 3:
		return fmt.Errorf("allocating addresses for vm %q: allocator returned cid %d, want >= 3", v.Name, a.CID)
	case used.IPs[a.IP]:
		return conflictf("allocating addresses for vm %q: ip %s is already allocated", v.Name, a.IP)
	case used.MACs[a.MAC]:
		return conflictf("allocating addresses for vm %q: mac %s is already allocated", v.Name, a.MAC)
	case used.CIDs[a.CID]:
		return conflictf("allocating addresses for vm %q: cid %d is already allocated", v.Name, a.CID)
	}
	v.IP, v.MAC, v.CID, v.Tap = a.IP, a.MAC, a.CID, TapName(v.ID)

	_, err = tx.ExecContext(ctx, `INSERT INTO vms (`+vmColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		v.ID, v.Name, v.ImageID, v.State, v.LastError, v.StopReason, v.VCPU, v.MemoryMiB,
		v.DiskBytes, v.WorkDiskBytes, boolInt(v.NAT), v.IP.String(), v.MAC, v.Tap, int64(v.CID),
		v.PID, v.Dir, w.storage, w.pending, w.created, w.updated, w.started, w.lastUsed)
	if err != nil {
		return vmWriteErr("creating", &v, err)
	}
	v.CreatedAt, v.UpdatedAt = nanosToTime(w.created), nanosToTime(w.updated)
	v.StartedAt, v.LastUsedAt = nanosToTime(w.started), nanosToTime(w.lastUsed)
	v.Storage = json.RawMessage(w.storage)
	t.after = append(t.after, func() { *vm = v })
	return nil
}

// usedAllocations reads every allocated IP, CID and MAC.
func usedAllocations(ctx context.Context, tx querier) (Used, error) {
	used := Used{IPs: map[netip.Addr]bool{}, CIDs: map[uint32]bool{}, MACs: map[string]bool{}}
	rows, err := tx.QueryContext(ctx, `SELECT id, name, ip, cid, mac FROM vms`)
	if err != nil {
		return Used{}, fmt.Errorf("reading allocations: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id, name, ip, mac string
			cid               int64
		)
		if err := rows.Scan(&id, &name, &ip, &cid, &mac); err != nil {
			return Used{}, fmt.Errorf("reading allocations: %w", err)
		}
		addr, err := netip.ParseAddr(ip)
		if err != nil {
			if name == "" {
				name = id
			}
			return Used{}, &DecodeError{VM: name, Column: "ip", Err: err}
		}
		used.IPs[addr] = true
		used.CIDs[uint32(cid)] = true
		used.MACs[mac] = true
	}
	if err := rows.Err(); err != nil {
		return Used{}, fmt.Errorf("reading allocations: %w", err)
	}
	return used, nil
}

// vmWriteErr maps a failed insert or update of v to a clear error.
func vmWriteErr(doing string, v *VM, err error) error {
	c, ok := asConstraint(err)
	if !ok {
		return fmt.Errorf("%s vm %q: %w", doing, v.Name, err)
	}
	switch c.column {
	case "vms.name":
		return conflictf("vm name %q is already taken", v.Name)
	case "vms.id":
		return conflictf("%s vm %q: id %s is already taken", doing, v.Name, v.ID)
	case "vms.ip":
		return conflictf("%s vm %q: ip %s is already allocated", doing, v.Name, v.IP)
	case "vms.mac":
		return conflictf("%s vm %q: mac %s is already allocated", doing, v.Name, v.MAC)
	case "vms.cid":
		return conflictf("%s vm %q: cid %d is already allocated", doing, v.Name, v.CID)
	case "vms.tap":
		return conflictf("%s vm %q: tap %s is already taken", doing, v.Name, v.Tap)
	}
	if c.foreignKey {
		return conflictf("%s vm %q: image %s does not exist", doing, v.Name, v.ImageID)
	}
	return &kindError{msg: fmt.Sprintf("%s vm %q: %v", doing, v.Name, err), kind: ErrConflict}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// GetVM returns the VM with the given ID; ErrNotFound if there is none.
func (s *Store) GetVM(ctx context.Context, id string) (VM, error) {
	vm, err := scanVM(s.db.QueryRowContext(calm(ctx), `SELECT `+vmColumns+` FROM vms WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return VM{}, notFoundf("vm %s not found", id)
	}
	var de *DecodeError
	if err != nil && !errors.As(err, &de) {
		return VM{}, fmt.Errorf("reading vm %s: %w", id, err)
	}
	return vm, err
}

// GetVMByName returns the VM with the given name; ErrNotFound if there is none.
func (s *Store) GetVMByName(ctx context.Context, name string) (VM, error) {
	vm, err := scanVM(s.db.QueryRowContext(calm(ctx), `SELECT `+vmColumns+` FROM vms WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return VM{}, notFoundf("vm %q not found", name)
	}
	var de *DecodeError
	if err != nil && !errors.As(err, &de) {
		return VM{}, fmt.Errorf("reading vm %q: %w", name, err)
	}
	return vm, err
}

// ListVMs returns every VM ordered by creation time, then name. A row that
// does not decode fails the whole list with its *DecodeError.
//
// The list is cached until the next write through this Store (writes made
// through DB() bypass the cache), so listing many VMs repeatedly costs one
// query per change, not one per call. Callers get their own copies.
func (s *Store) ListVMs(ctx context.Context) ([]VM, error) {
	return s.ListVMsWhere(ctx, nil)
}

// ListVMsWhere is ListVMs keeping only the VMs keep accepts (nil keeps
// all). Only those are copied out of the cache, so a background loop that
// wants the running VMs does not copy 500 stopped ones every second.
func (s *Store) ListVMsWhere(ctx context.Context, keep func(*VM) bool) ([]VM, error) {
	gen := s.gen.Load()
	s.cacheMu.Lock()
	if s.cached && s.cacheAt == gen {
		out := copyVMs(s.cache, keep)
		s.cacheMu.Unlock()
		return out, nil
	}
	s.cacheMu.Unlock()
	vms, err := s.listVMs(ctx)
	if err != nil {
		return nil, err
	}
	s.cacheMu.Lock()
	s.cache, s.cacheAt, s.cached = copyVMs(vms, nil), gen, true
	s.cacheMu.Unlock()
	if keep == nil {
		return vms, nil
	}
	return copyVMs(vms, keep), nil
}

// copyVMs copies the VMs keep accepts (nil: all), with their own slices.
func copyVMs(in []VM, keep func(*VM) bool) []VM {
	n := len(in)
	if keep != nil {
		n = 0
		for i := range in {
			if keep(&in[i]) {
				n++
			}
		}
	}
	out := make([]VM, 0, n)
	for i := range in {
		if keep != nil && !keep(&in[i]) {
			continue
		}
		v := in[i]
		v.Pending = append([]string(nil), v.Pending...)
		v.Storage = append(json.RawMessage(nil), v.Storage...)
		out = append(out, v)
	}
	return out
}

func (s *Store) listVMs(ctx context.Context) ([]VM, error) {
	rows, err := s.db.QueryContext(calm(ctx), `SELECT `+vmColumns+` FROM vms ORDER BY created_at, name`)
	if err != nil {
		return nil, fmt.Errorf("listing vms: %w", err)
	}
	defer rows.Close()
	var vms []VM
	for rows.Next() {
		vm, err := scanVM(rows)
		if err != nil {
			var de *DecodeError
			if errors.As(err, &de) {
				return nil, err
			}
			return nil, fmt.Errorf("listing vms: %w", err)
		}
		vms = append(vms, vm)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing vms: %w", err)
	}
	return vms, nil
}

// UpdateVM writes every mutable column of vm (everything but ID, ImageID,
// the allocations IP, MAC, CID, Tap, and CreatedAt) and sets UpdatedAt to
// now; ErrNotFound if the VM does not exist.
func (s *Store) UpdateVM(ctx context.Context, vm *VM) error {
	return s.Write(ctx, func(t *Tx) error { return t.UpdateVM(vm) })
}

// UpdateVM is Store.UpdateVM inside a transaction.
func (t *Tx) UpdateVM(vm *VM) error {
	if vm == nil {
		return errors.New("updating vm: nil vm")
	}
	v := *vm
	w, err := encodeVM(&v, t.now)
	if err != nil {
		return fmt.Errorf("updating vm %s: %w", v.ID, err)
	}
	res, err := t.tx.ExecContext(t.ctx, `UPDATE vms SET name = ?, state = ?, last_error = ?,
		stop_reason = ?, vcpu = ?, memory_mib = ?, disk_bytes = ?, work_disk_bytes = ?, nat = ?,
		pid = ?, dir = ?, storage = ?, pending = ?, updated_at = ?, started_at = ?, last_used_at = ?
		WHERE id = ?`,
		v.Name, v.State, v.LastError, v.StopReason, v.VCPU, v.MemoryMiB, v.DiskBytes,
		v.WorkDiskBytes, boolInt(v.NAT), v.PID, v.Dir, w.storage, w.pending, w.updated,
		w.started, w.lastUsed, v.ID)
	if err != nil {
		return vmWriteErr("updating", &v, err)
	}
	if err := oneRow(res, "vm", v.ID); err != nil {
		return err
	}
	t.after = append(t.after, func() {
		vm.UpdatedAt = nanosToTime(w.updated)
		vm.StartedAt, vm.LastUsedAt = nanosToTime(w.started), nanosToTime(w.lastUsed)
	})
	return nil
}

// SetState sets a VM's state and last error and bumps UpdatedAt.
func (s *Store) SetState(ctx context.Context, id, state, lastError string) error {
	if !ValidState(state) {
		return fmt.Errorf("setting state of vm %s: unknown state %q", id, state)
	}
	return s.Write(ctx, func(t *Tx) error {
		res, err := t.tx.ExecContext(t.ctx, `UPDATE vms SET state = ?, last_error = ?, updated_at = ? WHERE id = ?`,
			state, lastError, t.now.UnixNano(), id)
		if err != nil {
			return fmt.Errorf("setting state of vm %s to %s: %w", id, state, err)
		}
		return oneRow(res, "vm", id)
	})
}

// SetStorage replaces a VM's storage bookkeeping (JSON, see VM.Storage)
// and bumps UpdatedAt.
func (s *Store) SetStorage(ctx context.Context, id string, st json.RawMessage) error {
	b, err := storageJSON(st)
	if err != nil {
		return fmt.Errorf("setting storage of vm %s: %w", id, err)
	}
	return s.Write(ctx, func(t *Tx) error {
		res, err := t.tx.ExecContext(t.ctx, `UPDATE vms SET storage = ?, updated_at = ? WHERE id = ?`,
			b, t.now.UnixNano(), id)
		if err != nil {
			return fmt.Errorf("setting storage of vm %s: %w", id, err)
		}
		return oneRow(res, "vm", id)
	})
}

// storageJSON checks a storage column value: a JSON object ("{}" for none).
func storageJSON(st json.RawMessage) (string, error) {
	if len(bytes.TrimSpace(st)) == 0 {
		return "{}", nil
	}
	if err := checkObject(string(st)); err != nil {
		return "", fmt.Errorf("encoding storage: %w", err)
	}
	return string(st), nil
}

// DeleteVM deletes a VM row, freeing its allocations, and the intents
// recorded for it; ErrNotFound if it does not exist.
func (s *Store) DeleteVM(ctx context.Context, id string) error {
	return s.Write(ctx, func(t *Tx) error { return t.DeleteVM(id) })
}

// DeleteVM is Store.DeleteVM inside a transaction.
func (t *Tx) DeleteVM(id string) error {
	res, err := t.tx.ExecContext(t.ctx, `DELETE FROM vms WHERE id = ?`, id)
	if err != nil {
		return fmt.Errorf("deleting vm %s: %w", id, err)
	}
	if err := oneRow(res, "vm", id); err != nil {
		return err
	}
	if _, err := t.tx.ExecContext(t.ctx, `DELETE FROM intents WHERE vm_id = ?`, id); err != nil {
		return fmt.Errorf("deleting intents of vm %s: %w", id, err)
	}
	return nil
}

// CountVMsByState returns how many VMs are in each state (states with no VM
// are absent). A VM with an unknown state is a *DecodeError.
func (s *Store) CountVMsByState(ctx context.Context) (map[string]int, error) {
	rows, err := s.db.QueryContext(calm(ctx), `SELECT state, count(*), min(name) FROM vms GROUP BY state`)
	if err != nil {
		return nil, fmt.Errorf("counting vms by state: %w", err)
	}
	defer rows.Close()
	counts := map[string]int{}
	for rows.Next() {
		var (
			state, name string
			n           int
		)
		if err := rows.Scan(&state, &n, &name); err != nil {
			return nil, fmt.Errorf("counting vms by state: %w", err)
		}
		if !ValidState(state) {
			return nil, &DecodeError{VM: name, Column: "state", Err: fmt.Errorf("unknown state %q", state)}
		}
		counts[state] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("counting vms by state: %w", err)
	}
	return counts, nil
}

// oneRow turns "no row changed" into ErrNotFound.
func oneRow(res sql.Result, what, id string) error {
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, id, err)
	}
	if n == 0 {
		return notFoundf("%s %s not found", what, id)
	}
	return nil
}
