package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Image is one row of the images table.
type Image struct {
	ID           string // 10 lowercase hex chars, made by the caller (NewID)
	Name         string // unique
	RootfsPath   string
	KernelPath   string
	InitrdPath   string
	ModulesDir   string
	SizeBytes    int64
	PackagesHash string
	Source       string // SourceBuilt | SourceRegistered
	CreatedAt    time.Time
}

const imageColumns = `id, name, rootfs_path, kernel_path, initrd_path, modules_dir,
	size_bytes, packages_hash, source, created_at`

// CreateImage inserts img. An empty ID is filled with NewID and a zero
// CreatedAt with now; a taken name is an error wrapping ErrConflict.
func (s *Store) CreateImage(ctx context.Context, img *Image) error {
	return s.Write(ctx, func(t *Tx) error { return t.CreateImage(img) })
}

// CreateImage is Store.CreateImage inside a transaction.
func (t *Tx) CreateImage(img *Image) error {
	if img == nil {
		return errors.New("creating image: nil image")
	}
	m := *img
	if m.ID == "" {
		m.ID = NewID()
	}
	switch {
	case m.Name == "":
		return errors.New("creating image: empty name")
	case !validID(m.ID):
		return fmt.Errorf("creating image %q: id %q is not 10 lowercase hex characters", m.Name, m.ID)
	case m.RootfsPath == "":
		return fmt.Errorf("creating image %q: empty rootfs path", m.Name)
	case m.Source != SourceBuilt && m.Source != SourceRegistered:
		return fmt.Errorf("creating image %q: source %q is not %q or %q", m.Name, m.Source, SourceBuilt, SourceRegistered)
	}
	if m.CreatedAt.IsZero() {
		m.CreatedAt = t.now
	}
	created, err := timeToNanos(m.CreatedAt)
	if err != nil {
		return fmt.Errorf("creating image %q: created_at: %w", m.Name, err)
	}
	_, err = t.tx.ExecContext(t.ctx, `INSERT INTO images (`+imageColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		m.ID, m.Name, m.RootfsPath, m.KernelPath, m.InitrdPath, m.ModulesDir, m.SizeBytes,
		m.PackagesHash, m.Source, created)
	if err != nil {
		if c, ok := asConstraint(err); ok {
			switch c.column {
			case "images.name":
				return conflictf("image name %q is already taken", m.Name)
			case "images.id":
				return conflictf("creating image %q: id %s is already taken", m.Name, m.ID)
			}
			return &kindError{msg: fmt.Sprintf("creating image %q: %v", m.Name, err), kind: ErrConflict}
		}
		return fmt.Errorf("creating image %q: %w", m.Name, err)
	}
	m.CreatedAt = nanosToTime(created)
	t.after = append(t.after, func() { *img = m })
	return nil
}

func scanImage(sc scanner) (Image, error) {
	var (
		m       Image
		created sql.NullInt64
	)
	if err := sc.Scan(&m.ID, &m.Name, &m.RootfsPath, &m.KernelPath, &m.InitrdPath, &m.ModulesDir,
		&m.SizeBytes, &m.PackagesHash, &m.Source, &created); err != nil {
		return Image{}, err
	}
	if m.Source != SourceBuilt && m.Source != SourceRegistered {
		return Image{}, fmt.Errorf("decoding image %s: column \"source\": unknown source %q", m.Name, m.Source)
	}
	m.CreatedAt = nanosToTime(created)
	return m, nil
}

// GetImage returns the image with the given ID; ErrNotFound if there is none.
func (s *Store) GetImage(ctx context.Context, id string) (Image, error) {
	m, err := scanImage(s.db.QueryRowContext(calm(ctx), `SELECT `+imageColumns+` FROM images WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Image{}, notFoundf("image %s not found", id)
	}
	if err != nil {
		return Image{}, fmt.Errorf("reading image %s: %w", id, err)
	}
	return m, nil
}

// GetImageByName returns the image with the given name; ErrNotFound if there is none.
func (s *Store) GetImageByName(ctx context.Context, name string) (Image, error) {
	m, err := scanImage(s.db.QueryRowContext(calm(ctx), `SELECT `+imageColumns+` FROM images WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return Image{}, notFoundf("image %q not found", name)
	}
	if err != nil {
		return Image{}, fmt.Errorf("reading image %q: %w", name, err)
	}
	return m, nil
}

// ListImages returns every image ordered by name.
func (s *Store) ListImages(ctx context.Context) ([]Image, error) {
	rows, err := s.db.QueryContext(calm(ctx), `SELECT `+imageColumns+` FROM images ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("listing images: %w", err)
	}
	defer rows.Close()
	var out []Image
	for rows.Next() {
		m, err := scanImage(rows)
		if err != nil {
			return nil, fmt.Errorf("listing images: %w", err)
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing images: %w", err)
	}
	return out, nil
}

// DeleteImage deletes an image row. While VMs use the image it refuses with
// an error wrapping ErrConflict that names them; ErrNotFound if there is no
// such image.
func (s *Store) DeleteImage(ctx context.Context, id string) error {
	return s.Write(ctx, func(t *Tx) error { return t.DeleteImage(id) })
}

// DeleteImage is Store.DeleteImage inside a transaction.
func (t *Tx) DeleteImage(id string) error {
	ctx, tx := t.ctx, t.tx
	var name string
	switch err := tx.QueryRowContext(ctx, `SELECT name FROM images WHERE id = ?`, id).Scan(&name); {
	case errors.Is(err, sql.ErrNoRows):
		return notFoundf("image %s not found", id)
	case err != nil:
		return fmt.Errorf("deleting image %s: %w", id, err)
	}
	users, err := imageUsers(ctx, tx, id)
	if err != nil {
		return fmt.Errorf("deleting image %s: %w", name, err)
	}
	if len(users) > 0 {
		return conflictf("image %s is used by vm %s; delete them first", name, strings.Join(users, ", "))
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM images WHERE id = ?`, id); err != nil {
		if c, ok := asConstraint(err); ok && c.foreignKey {
			return conflictf("image %s is used by a vm; delete it first", name)
		}
		return fmt.Errorf("deleting image %s: %w", name, err)
	}
	return nil
}

// imageUsers lists the names of the VMs that use image id, by name.
func imageUsers(ctx context.Context, tx querier, id string) ([]string, error) {
	rows, err := tx.QueryContext(ctx, `SELECT name FROM vms WHERE image_id = ? ORDER BY name`, id)
	if err != nil {
		return nil, fmt.Errorf("listing vms using the image: %w", err)
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, fmt.Errorf("listing vms using the image: %w", err)
		}
		names = append(names, n)
	}
	return names, rows.Err()
}
