package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"
)

// Snapshots (SEMANTICS.md §7). Like Firecracker, the fake writes two
// files: the microVM state (here a header line naming the version, then
// the configuration and the guest's identity as JSON) and the guest memory,
// written whole, as Firecracker does: every page of it, zero or not, so the
// file takes its full size on disk. The memory file's first page repeats
// the header; a few more pages hold data (what the guest touched), the
// rest are written zeros.
//
// Load checks both the way Firecracker does before it touches anything: the
// state's format version must be this Firecracker's (a snapshot is only good
// for the Firecracker that made it), the memory file must match the state
// (size and header), and the drives, taps and vsock path must exist again.

// snapshotMagic starts the state file and the memory file.
const snapshotMagic = "fcfake-snapshot"

type snapshotFile struct {
	Version string        `json:"firecracker_version"`
	Machine machineConfig `json:"machine"`
	Boot    *bootSource   `json:"boot,omitempty"`
	Drives  []*drive      `json:"drives"`
	Ifaces  []*netIface   `json:"ifaces"`
	Vsock   *snapVsock    `json:"vsock,omitempty"`
	Guest   snapGuest     `json:"guest"`
}

type snapVsock struct {
	CID  uint32 `json:"guest_cid"`
	Path string `json:"uds_path"`
}

// snapGuest is the simulated guest's identity: it carries over a restore,
// with its uptime (the monotonic clock does not run while suspended).
type snapGuest struct {
	Hostname string  `json:"hostname"`
	BootID   string  `json:"boot_id"`
	UptimeS  float64 `json:"uptime_s"`
}

// memHeader is the first line of the memory file.
func memHeader(version, bootID string, memMiB uint64) string {
	return fmt.Sprintf("%s-mem v%s boot_id=%s mem_mib=%d\n", snapshotMagic, version, bootID, memMiB)
}

// touchedPages are the pages of the fake guest's memory that hold data: the
// header page, the "kernel" (the first MiB) and every 256th page.
func touched(page int64) bool { return page < 256 || page%256 == 0 }

const pageSize = 4096

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
	time.Sleep(v.sw.snapshotDelay)
	if v.sw.failSnapshotCreate {
		return fault("Create snapshot error: Cannot save the microVM state: Failed to save snapshot state to file: Input/output error (os error 5) (fcfake: FCFAKE_FAIL_SNAPSHOT_CREATE is set)")
	}
	g := v.guest.Load()
	snap := snapshotFile{Version: v.version(), Machine: v.machine, Boot: v.boot, Drives: v.drives, Ifaces: v.ifaces,
		Guest: snapGuest{Hostname: g.hostname, BootID: g.bootID, UptimeS: time.Since(g.bootTime).Seconds()}}
	if v.vsock != nil {
		snap.Vsock = &snapVsock{CID: v.vsock.cid, Path: v.vsock.path}
		v.vsock.reset()
	}
	data, err := json.Marshal(snap)
	if err != nil {
		return fault("Create snapshot error: %v", err)
	}
	state := append([]byte(fmt.Sprintf("%s v%s\n", snapshotMagic, snap.Version)), data...)
	if err := os.WriteFile(*b.SnapshotPath, state, 0o644); err != nil {
		return fault("Create snapshot error: Cannot save the microVM state: Failed to save snapshot state to file: %s", osError(err))
	}
	if err := writeMemory(*b.MemFilePath, memHeader(snap.Version, g.bootID, v.machine.MemSizeMib), int64(v.machine.MemSizeMib)<<20); err != nil {
		return fault("Create snapshot error: Cannot save the microVM memory: Failed to dump guest memory to file: %s", osError(err))
	}
	v.log.logf(levelInfo, "Snapshot created at %s (memory at %s)", *b.SnapshotPath, *b.MemFilePath)
	return nil
}

// writeMemory writes the whole guest memory to path, page by page.
func writeMemory(path, header string, size int64) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	zero, data := make([]byte, pageSize), bytes.Repeat([]byte{0xa5}, pageSize)
	copy(data, header)
	for p := int64(0); p < size/pageSize; p++ {
		page := zero
		if touched(p) {
			page = data
		}
		if _, err := w.Write(page); err != nil {
			f.Close()
			return err
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
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
	time.Sleep(v.sw.snapshotDelay)
	// From here on a failure is fatal: the 400 is sent, then the process exits 1.
	if v.sw.failSnapshotLoad {
		return &faultError{msg: "Load snapshot error: Failed to restore from snapshot: Failed to build microVM from snapshot: fcfake: FCFAKE_FAIL_SNAPSHOT_LOAD is set", fatal: true}
	}
	snap, err := v.restore(b)
	if err != nil {
		return &faultError{msg: "Load snapshot error: " + err.Error(), fatal: true}
	}
	v.markRestored(snap.Guest)
	v.paused.Store(b.ResumeVM == nil || !*b.ResumeVM)
	v.log.logf(levelInfo, "Snapshot loaded from %s", *b.SnapshotPath)
	return nil
}

// readState reads and checks a state file written by snapshotCreate.
func (v *vmm) readState(path string) (snapshotFile, error) {
	var snap snapshotFile
	data, err := os.ReadFile(path)
	if err != nil {
		return snap, fault("Failed to restore from snapshot: Failed to get snapshot state from file: Failed to open snapshot file: %s", osError(err))
	}
	head, rest, ok := bytes.Cut(data, []byte("\n"))
	ver, okMagic := strings.CutPrefix(string(head), snapshotMagic+" v")
	if !ok || !okMagic {
		return snap, fault("Failed to restore from snapshot: Failed to get snapshot state from file: Failed to load snapshot state from file: Snapshot file %s: invalid magic (not a Firecracker snapshot)", path)
	}
	if ver != v.version() {
		return snap, fault("Failed to restore from snapshot: Failed to get snapshot state from file: Failed to load snapshot state from file: Snapshot version mismatch: the snapshot was created by Firecracker v%s, this is Firecracker v%s", ver, v.version())
	}
	if err := json.Unmarshal(rest, &snap); err != nil || snap.Version != ver {
		return snap, fault("Failed to restore from snapshot: Failed to get snapshot state from file: Failed to load snapshot state from file: Cannot deserialize the microVM state from %s (CRC mismatch)", path)
	}
	return snap, nil
}

// checkMemory checks that path holds the memory of snap's guest.
func checkMemory(path string, snap snapshotFile) error {
	f, err := os.Open(path)
	if err != nil {
		return fault("Failed to restore from snapshot: Failed to load guest memory: Cannot open the memory file %s: %s", path, osError(err))
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fault("Failed to restore from snapshot: Failed to load guest memory: %s", osError(err))
	}
	if want := int64(snap.Machine.MemSizeMib) << 20; fi.Size() != want {
		return fault("Failed to restore from snapshot: Failed to load guest memory: The memory file %s is %d bytes, the snapshot's guest memory is %d bytes", path, fi.Size(), want)
	}
	want := memHeader(snap.Version, snap.Guest.BootID, snap.Machine.MemSizeMib)
	head := make([]byte, len(want))
	if _, err := io.ReadFull(f, head); err != nil || string(head) != want {
		return fault("Failed to restore from snapshot: Failed to load guest memory: The memory file %s does not hold this snapshot's guest memory", path)
	}
	return nil
}

func (v *vmm) restore(b snapshotLoadBody) (snapshotFile, error) {
	snap, err := v.readState(*b.SnapshotPath)
	if err != nil {
		return snap, err
	}
	if b.MemFilePath != nil {
		if err := checkMemory(*b.MemFilePath, snap); err != nil {
			return snap, err
		}
	} else if *b.MemBackend.BackendType == "File" {
		if err := checkMemory(*b.MemBackend.BackendPath, snap); err != nil {
			return snap, err
		}
	} else {
		c, err := net.DialTimeout("unix", *b.MemBackend.BackendPath, time.Second)
		if err != nil {
			return snap, fault("Failed to restore from snapshot: Cannot connect to the UFFD handler at %s: %s", *b.MemBackend.BackendPath, osError(err))
		}
		c.Close()
	}
	v.machine = snap.Machine
	v.boot = snap.Boot
	for _, d := range snap.Drives {
		if err := d.open(); err != nil {
			return snap, err
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
			return snap, fault("Failed to restore from snapshot: Cannot open the tap %s: %s", n.HostDevName, osError(err))
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
			return snap, err
		}
		v.vsock = dev
	}
	return snap, nil
}
