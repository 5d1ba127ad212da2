package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Intent records a multi-step operation on a VM or an image before its
// host work starts, so that a daemon killed at any point can finish or
// undo it on restart. It is written in the same transaction as the state
// change that starts the operation and deleted in the one that ends it.
// Data is the operation's own step data (JSON the caller owns).
type Intent struct {
	ID        int64
	VMID      string // "" for an image operation
	ImageID   string // "" for a VM operation
	Op        string
	StartedAt time.Time
	Data      json.RawMessage
}

const intentColumns = `id, vm_id, image_id, op, started_at, data`

// BeginIntent records in and fills its ID (and StartedAt, when zero) once
// the transaction commits.
func (t *Tx) BeginIntent(in *Intent) error {
	if in == nil || in.Op == "" || (in.VMID == "") == (in.ImageID == "") {
		return errors.New("recording intent: need an op and exactly one of a vm or an image")
	}
	started := in.StartedAt
	if started.IsZero() {
		started = t.now
	}
	data := in.Data
	if len(data) == 0 {
		data = json.RawMessage("{}")
	}
	if !json.Valid(data) {
		return fmt.Errorf("recording intent %s: data is not JSON", in.Op)
	}
	res, err := t.tx.ExecContext(t.ctx, `INSERT INTO intents (vm_id, image_id, op, started_at, data) VALUES (?, ?, ?, ?, ?)`,
		in.VMID, in.ImageID, in.Op, started.UnixNano(), string(data))
	if err != nil {
		return fmt.Errorf("recording intent %s of %s: %w", in.Op, in.VMID+in.ImageID, err)
	}
	id, err := res.LastInsertId()
	if err != nil {
		return fmt.Errorf("recording intent %s of %s: %w", in.Op, in.VMID+in.ImageID, err)
	}
	t.after = append(t.after, func() {
		in.ID, in.StartedAt, in.Data = id, time.Unix(0, started.UnixNano()).UTC(), data
	})
	return nil
}

// EndIntent deletes the intent with the given ID; ErrNotFound when there
// is none.
func (t *Tx) EndIntent(id int64) error {
	res, err := t.tx.ExecContext(t.ctx, `DELETE FROM intents WHERE id = ?`, id)
	if err != nil {
		return fmt.Errorf("clearing intent %d: %w", id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("clearing intent %d: %w", id, err)
	}
	if n == 0 {
		return notFoundf("intent %d not found", id)
	}
	return nil
}

// BeginIntent records in on its own.
func (s *Store) BeginIntent(ctx context.Context, in *Intent) error {
	return s.Write(ctx, func(t *Tx) error { return t.BeginIntent(in) })
}

// EndIntent deletes one intent on its own.
func (s *Store) EndIntent(ctx context.Context, id int64) error {
	return s.Write(ctx, func(t *Tx) error { return t.EndIntent(id) })
}

// ListIntents returns every recorded intent, oldest first.
func (s *Store) ListIntents(ctx context.Context) ([]Intent, error) {
	return s.intents(ctx, `SELECT `+intentColumns+` FROM intents ORDER BY id`)
}

// VMIntents returns the intents recorded for one VM, oldest first.
func (s *Store) VMIntents(ctx context.Context, vmID string) ([]Intent, error) {
	return s.intents(ctx, `SELECT `+intentColumns+` FROM intents WHERE vm_id = ? ORDER BY id`, vmID)
}

func (s *Store) intents(ctx context.Context, query string, args ...any) ([]Intent, error) {
	rows, err := s.db.QueryContext(calm(ctx), query, args...)
	if err != nil {
		return nil, fmt.Errorf("listing intents: %w", err)
	}
	defer rows.Close()
	var out []Intent
	for rows.Next() {
		var (
			in      Intent
			started int64
			data    string
		)
		if err := rows.Scan(&in.ID, &in.VMID, &in.ImageID, &in.Op, &started, &data); err != nil {
			return nil, fmt.Errorf("listing intents: %w", err)
		}
		in.StartedAt = nanosToTime(sql.NullInt64{Int64: started, Valid: true})
		in.Data = json.RawMessage(data)
		out = append(out, in)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing intents: %w", err)
	}
	return out, nil
}
