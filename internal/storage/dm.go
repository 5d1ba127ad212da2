package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"banger/internal/hostops"
)

// Device-mapper driver. Activate builds, in order, and records each handle
// as "intended" before and "done" after its host step:
//
//	loop (image, read-only) -> loop (cow) -> dm banger-<id>-origin
//	(linear over the image + zero up to the disk size) -> dm banger-<id>
//	(persistent snapshot, 4 KiB chunks)
//
// then hands the snapshot node to the user and grows its filesystem once.
// Any failure releases the handles in reverse order through the same path
// as Deactivate.

func snapName(vmID string) string   { return "banger-" + vmID }
func originName(vmID string) string { return "banger-" + vmID + "-origin" }

// cowBytes is the COW file size for a disk: every chunk the guest can write
// plus the exception store's metadata (16 bytes per 4 KiB chunk, i.e. one
// metadata chunk per 256) and a header, with margin. A COW store that
// fills up invalidates the snapshot and loses the VM's writes.
func cowBytes(disk int64) int64 {
	n := disk + disk/128 + 1<<20
	return (n + 4095) &^ 4095
}

// makeCOW creates the sparse COW file; nothing is left on failure.
func makeCOW(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("creating cow file %s: %w", path, err)
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return errors.Join(fmt.Errorf("sizing cow file %s to %s: %w", path, human(size), err), removeIfThere(path))
	}
	return nil
}

func (m *Manager) activateDM(ctx context.Context, d Disk) (State, error) {
	st := d.State
	if st.Phase == PhaseReady {
		ok, err := m.present(ctx, st)
		if err != nil {
			return st, fmt.Errorf("checking devices of vm %s: %w", d.VMID, err)
		}
		if ok {
			return st, nil
		}
	}
	if len(st.Handles) > 0 {
		var err error
		if st, err = m.release(ctx, d.VMID, st); err != nil {
			return st, fmt.Errorf("clearing leftover devices of vm %s: %w", d.VMID, err)
		}
	}
	imgBytes, err := checkImage(d.ImagePath)
	if err != nil {
		return st, err
	}
	if err := d.checkSize(imgBytes); err != nil {
		return st, err
	}
	if err := growCOW(st.COWPath, cowBytes(d.DiskBytes)); err != nil {
		return st, fmt.Errorf("vm %s: %w", d.VMID, err)
	}
	prev := st
	st.Phase = PhaseSettingUp
	st.RootDisk = "/dev/mapper/" + snapName(d.VMID)
	if err := m.save(ctx, d.VMID, st); err != nil {
		return prev, err
	}
	if err = m.setup(ctx, d, &st); err != nil {
		var rerr error
		st, rerr = m.release(ctx, d.VMID, st)
		if rerr != nil {
			rerr = fmt.Errorf("rolling back: %w", rerr)
		}
		return st, errors.Join(fmt.Errorf("activating storage of vm %s: %w", d.VMID, err), rerr)
	}
	st.Phase = PhaseReady
	if err := m.save(ctx, d.VMID, st); err != nil {
		// Unrecorded devices would outlive a restart unnoticed: undo them.
		st, rerr := m.release(ctx, d.VMID, st)
		return st, errors.Join(err, rerr)
	}
	return st, nil
}

// setup runs the host steps, appending to st.Handles as it goes.
func (m *Manager) setup(ctx context.Context, d Disk, st *State) error {
	// add records h as intended, runs do, and records it done with the
	// name do returns. A loop attach that fails made nothing and is dropped
	// (its name is unknown, and another VM's loop may share the backing).
	add := func(h Handle, do func() (string, error)) (string, error) {
		h.State = StateIntended
		st.Handles = append(st.Handles, h)
		if err := m.save(ctx, d.VMID, *st); err != nil {
			st.Handles = st.Handles[:len(st.Handles)-1] // nothing made
			return "", err
		}
		name, err := do()
		i := len(st.Handles) - 1
		if err != nil {
			if h.Kind == KindLoop {
				st.Handles = st.Handles[:i]
				err = errors.Join(err, m.save(ctx, d.VMID, *st))
			}
			return "", err
		}
		st.Handles[i].Name, st.Handles[i].State = name, StateDone
		return name, m.save(ctx, d.VMID, *st)
	}
	snap, origin := snapName(d.VMID), originName(d.VMID)
	err := func() error {
		m.mu.Lock()
		defer m.mu.Unlock()
		imgLoop, err := add(Handle{Kind: KindLoop, Backing: d.ImagePath, Role: RoleImage}, func() (string, error) {
			dev, err := m.host.LoopAttach(ctx, d.ImagePath, true)
			if err != nil {
				return "", fmt.Errorf("attaching image %s: %w", d.ImagePath, err)
			}
			return dev, nil
		})
		if err != nil {
			return err
		}
		cowLoop, err := add(Handle{Kind: KindLoop, Backing: st.COWPath, Role: RoleCOW}, func() (string, error) {
			dev, err := m.host.LoopAttach(ctx, st.COWPath, false)
			if err != nil {
				return "", fmt.Errorf("attaching cow file %s: %w", st.COWPath, err)
			}
			return dev, nil
		})
		if err != nil {
			return err
		}
		if _, err := add(Handle{Kind: KindDM, Name: origin, Role: RoleOrigin}, func() (string, error) {
			if err := m.host.DMCreateOrigin(ctx, origin, imgLoop, d.ImagePath, d.DiskBytes); err != nil {
				return "", fmt.Errorf("creating origin %s: %w", origin, err)
			}
			return origin, nil
		}); err != nil {
			return err
		}
		_, err = add(Handle{Kind: KindDM, Name: snap, Role: RoleSnapshot}, func() (string, error) {
			if err := m.host.DMCreateSnapshot(ctx, snap, origin, cowLoop, st.COWPath); err != nil {
				return "", fmt.Errorf("creating snapshot %s: %w", snap, err)
			}
			return snap, nil
		})
		return err
	}()
	if err != nil {
		return err
	}
	node, err := m.host.DMChown(ctx, snap)
	if err != nil {
		return fmt.Errorf("handing %s to the user: %w", snap, err)
	}
	st.RootDisk = node
	grown, err := m.host.GrowFS(ctx, node)
	if err != nil {
		return fmt.Errorf("growing the filesystem on %s: %w", node, err)
	}
	if grown {
		m.log.Info("grew root filesystem", "vm", d.VMID, "device", node, "bytes", d.DiskBytes)
	}
	return nil
}

// growCOW makes sure an existing COW file is at least size bytes.
func growCOW(path string, size int64) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("cow file: %w", err)
	}
	if fi.Size() >= size {
		return nil
	}
	if err := os.Truncate(path, size); err != nil {
		return fmt.Errorf("growing cow file %s to %s: %w", path, human(size), err)
	}
	return nil
}

// release tears st's handles down in reverse order, recording after each.
// On failure the state keeps the handles not yet released.
func (m *Manager) release(ctx context.Context, vmID string, st State) (State, error) {
	st.Handles = append([]Handle(nil), st.Handles...)
	st.Phase = PhaseTearingDown
	saveErr := m.save(ctx, vmID, st)
	for len(st.Handles) > 0 {
		h := st.Handles[len(st.Handles)-1]
		if err := m.releaseHandle(ctx, vmID, h); err != nil {
			return st, errors.Join(err, m.save(ctx, vmID, st), saveErr)
		}
		st.Handles = st.Handles[:len(st.Handles)-1]
		saveErr = errors.Join(saveErr, m.save(ctx, vmID, st))
	}
	st.Phase = PhaseDown
	return st, errors.Join(saveErr, m.save(ctx, vmID, st))
}

func (m *Manager) releaseHandle(ctx context.Context, vmID string, h Handle) error {
	switch h.Kind {
	case KindDM:
		return m.removeDM(ctx, h.Name)
	case KindLoop:
		m.mu.Lock()
		defer m.mu.Unlock()
		devs := []string{h.Name}
		if h.Name == "" {
			// Recorded as intended and never named: a daemon that died
			// inside the attach. Find it by its backing file.
			var err error
			if devs, err = m.host.LoopsBackedBy(ctx, h.Backing); err != nil {
				return fmt.Errorf("finding loop devices of %s: %w", h.Backing, err)
			}
		}
		for _, dev := range devs {
			err := m.host.LoopDetach(ctx, dev, h.Backing)
			if errors.Is(err, hostops.ErrRefused) {
				// After a host reboot the number may belong to someone else.
				m.log.Warn("loop device no longer ours; leaving it", "vm", vmID, "device", dev, "err", err)
				continue
			}
			if err != nil {
				return fmt.Errorf("detaching %s (%s): %w", dev, h.Backing, err)
			}
		}
		return nil
	default:
		return fmt.Errorf("unknown storage handle kind %q (%s)", h.Kind, h.Name)
	}
}

// removeDM removes a dm device, retrying while it is busy with backoff up
// to the busy timeout.
func (m *Manager) removeDM(ctx context.Context, name string) error {
	deadline := time.Now().Add(m.busy)
	wait := 25 * time.Millisecond
	for {
		m.mu.Lock()
		err := m.host.DMRemove(ctx, name)
		m.mu.Unlock()
		var busy *hostops.BusyError
		if err == nil || !errors.As(err, &busy) {
			if err != nil {
				return fmt.Errorf("removing %s: %w", name, err)
			}
			return nil
		}
		if time.Now().Add(wait).After(deadline) {
			return fmt.Errorf("removing %s: still busy after %s: %w; stop whatever holds it and retry", name, m.busy, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("removing %s: %w (last: %v)", name, ctx.Err(), err)
		case <-time.After(wait):
		}
		wait = min(wait*2, time.Second)
	}
}

// present reports whether every recorded handle still exists on the host.
func (m *Manager) present(ctx context.Context, st State) (bool, error) {
	for _, h := range st.Handles {
		if h.State != StateDone {
			return false, nil
		}
		switch h.Kind {
		case KindDM:
			ok, err := m.host.DMExists(ctx, h.Name)
			if err != nil || !ok {
				return false, err
			}
		case KindLoop:
			b, err := m.host.LoopBacking(ctx, h.Name)
			if err != nil {
				return false, err
			}
			want, err := filepath.EvalSymlinks(h.Backing)
			if err != nil || b != want {
				return false, nil
			}
		}
	}
	return st.Driver != DriverDM || len(st.Handles) == 4, nil
}
