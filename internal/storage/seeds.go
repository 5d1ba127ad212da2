package storage

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Work-disk seeds are cached as SeedDir/<image id>-<size>-<mtime>.ext4
// (see seed in workdisk.go), with a .tmp suffix while one is being built.

// seedImage returns the image ID a seed file name belongs to, or false for
// a name that is not a seed.
func seedImage(name string) (string, bool) {
	base := strings.TrimSuffix(name, ".tmp")
	base, ok := strings.CutSuffix(base, ".ext4")
	if !ok {
		return "", false
	}
	parts := strings.Split(base, "-")
	if len(parts) < 3 || parts[len(parts)-1] == "" || parts[len(parts)-2] == "" {
		return "", false
	}
	id := strings.Join(parts[:len(parts)-2], "-")
	if id == "" {
		return "", false
	}
	return id, true
}

// RemoveSeeds deletes every cached work-disk seed of the image (all its
// versions, and one half-built), for when the image is deleted. It reports
// how many it removed.
func (m *Manager) RemoveSeeds(imageID string) (int, error) {
	n, err := m.pruneSeeds(func(id string, _ bool) bool { return id != imageID })
	g, gerr := m.pruneGrown(func(id string) bool { return id != imageID }, false)
	return n + g, errors.Join(err, gerr)
}

// PruneSeeds deletes half-built seeds (a build killed midway) and the
// seeds of every image for which keep is false (images that no longer
// exist: deleted by an older build, or by a delete that was interrupted).
// It is for start-up, when no seed is being built. It reports how many it
// removed.
func (m *Manager) PruneSeeds(keep func(imageID string) bool) (int, error) {
	n, err := m.pruneSeeds(func(id string, half bool) bool { return !half && keep(id) })
	g, gerr := m.pruneGrown(keep, true)
	return n + g, errors.Join(err, gerr)
}

func (m *Manager) pruneSeeds(keep func(id string, half bool) bool) (int, error) {
	if m.seeds == "" {
		return 0, nil
	}
	m.seedMu.Lock()
	defer m.seedMu.Unlock()
	ents, err := os.ReadDir(m.seeds)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("listing work-disk seeds in %s: %w", m.seeds, err)
	}
	n := 0
	var errs []error
	for _, e := range ents {
		id, ok := seedImage(e.Name())
		if !ok || !e.Type().IsRegular() || keep(id, strings.HasSuffix(e.Name(), ".tmp")) {
			continue
		}
		p := filepath.Join(m.seeds, e.Name())
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("removing work-disk seed %s: %w", p, err))
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}
