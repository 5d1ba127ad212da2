package main

import (
	"encoding/json"
	"net"
	"os"
	"time"
)

// Snapshots (SEMANTICS.md §7). The fake's snapshot file holds the
// configuration as JSON; the memory file is a sparse file of the guest's
// memory size.

type snapshotFile struct {
	Fcfake  int           `json:"fcfake_snapshot"`
	Machine machineConfig `json:"machine"`
	Boot    *bootSource   `json:"boot,omitempty"`
	Drives  []*drive      `json:"drives"`
	Ifaces  []*netIface   `json:"ifaces"`
	Vsock   *snapVsock    `json:"vsock,omitempty"`
}

type snapVsock struct {
	CID  uint32 `json:"guest_cid"`
	Path string `json:"uds_path"`
}

func (v *vmm) snapshotCreate(body []byte) error {
	var b snapshotCreateBody
	if err := decodeBody(body, &b); err != nil {
		return err
	}
	typ := "Full"
	if b.SnapshotType != nil {
		if err := oneOf(*b.SnapshotType, "Full", "Diff"); err != nil {
			return err
		}
		typ = *b.SnapshotType
	}
	if !v.started {
		return fault(errBeforeStart)
	}
	if !v.paused.Load() {
		return fault("Create snapshot error: Cannot create a snapshot of a microVM that is not paused.")
	}
	if typ == "Diff" && !v.machine.TrackDirtyPages {
		return fault("Create snapshot error: Diff snapshots are not allowed on uVMs with dirty page tracking disabled.")
	}
	snap := snapshotFile{Fcfake: 1, Machine: v.machine, Boot: v.boot, Drives: v.drives, Ifaces: v.ifaces}
	if v.vsock != nil {
		snap.Vsock = &snapVsock{CID: v.vsock.cid, Path: v.vsock.path}
		v.vsock.reset()
	}
	data, err := json.Marshal(snap)
	if err != nil {
		return fault("Create snapshot error: %v", err)
	}
	if err := os.WriteFile(*b.SnapshotPath, data, 0o644); err != nil {
		return fault("Create snapshot error: Cannot write the microVM state to %s: %s", *b.SnapshotPath, osError(err))
	}
	mem, err := os.OpenFile(*b.MemFilePath, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fault("Create snapshot error: Cannot write the guest memory to %s: %s", *b.MemFilePath, osError(err))
	}
	defer mem.Close()
	if err := mem.Truncate(int64(v.machine.MemSizeMib) << 20); err != nil {
		return fault("Create snapshot error: Cannot write the guest memory to %s: %s", *b.MemFilePath, osError(err))
	}
	return nil
}

func (v *vmm) snapshotLoad(body []byte) error {
	var b snapshotLoadBody
	if err := decodeBody(body, &b); err != nil {
		return err
	}
	if (b.MemFilePath == nil) == (b.MemBackend == nil) {
		return fault("Exactly one of `mem_file_path` or `mem_backend` must be present in the body of the request.")
	}
	if b.MemBackend != nil {
		if err := oneOf(*b.MemBackend.BackendType, "File", "Uffd"); err != nil {
			return err
		}
	}
	if v.started || v.bootConfigured {
		return fault("Load snapshot error: Loading a microVM snapshot not allowed after configuring boot-specific resources.")
	}
	// From here on a failure is fatal: the 400 is sent, then the process exits 1.
	if err := v.restore(b); err != nil {
		return &faultError{msg: "Load snapshot error: " + err.Error(), fatal: true}
	}
	v.markBooted()
	v.paused.Store(b.ResumeVM == nil || !*b.ResumeVM)
	v.log.logf(levelInfo, "Snapshot loaded from %s", *b.SnapshotPath)
	return nil
}

func (v *vmm) restore(b snapshotLoadBody) error {
	data, err := os.ReadFile(*b.SnapshotPath)
	if err != nil {
		return fault("Cannot open the snapshot file %s: %s", *b.SnapshotPath, osError(err))
	}
	var snap snapshotFile
	if err := json.Unmarshal(data, &snap); err != nil || snap.Fcfake != 1 {
		return fault("Cannot deserialize the microVM state from %s", *b.SnapshotPath)
	}
	if b.MemFilePath != nil {
		f, err := os.Open(*b.MemFilePath)
		if err != nil {
			return fault("Cannot open the memory file %s: %s", *b.MemFilePath, osError(err))
		}
		f.Close()
	} else if *b.MemBackend.BackendType == "File" {
		f, err := os.Open(*b.MemBackend.BackendPath)
		if err != nil {
			return fault("Cannot open the memory file %s: %s", *b.MemBackend.BackendPath, osError(err))
		}
		f.Close()
	} else {
		c, err := net.DialTimeout("unix", *b.MemBackend.BackendPath, time.Second)
		if err != nil {
			return fault("Cannot connect to the UFFD handler at %s: %s", *b.MemBackend.BackendPath, osError(err))
		}
		c.Close()
	}
	v.machine = snap.Machine
	v.boot = snap.Boot
	for _, d := range snap.Drives {
		if err := d.open(); err != nil {
			return err
		}
		v.drives = append(v.drives, d)
	}
	overrides := map[string]string{}
	for _, o := range b.NetworkOverrides {
		overrides[*o.IfaceID] = *o.HostDevName
	}
	for _, n := range snap.Ifaces {
		if dev, ok := overrides[n.IfaceID]; ok {
			n.HostDevName = dev
		}
		tap, err := openTap(n.HostDevName)
		if err != nil {
			return fault("Cannot open the tap %s: %s", n.HostDevName, osError(err))
		}
		n.tap = tap
		v.ifaces = append(v.ifaces, n)
	}
	if snap.Vsock != nil {
		path := snap.Vsock.Path
		if b.VsockOverride != nil {
			path = *b.VsockOverride.UDSPath
		}
		dev, err := v.bindVsock(snap.Vsock.CID, path)
		if err != nil {
			return err
		}
		v.vsock = dev
	}
	return nil
}
