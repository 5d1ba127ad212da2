package daemon

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/api"
	"banger/internal/store"
)

// A suspended VM's snapshot lives in its directory: Firecracker's VM state
// and memory files, and snapshot.json, the identity banger checks before a
// restore. snapshot.json is written last (renamed into place) and removed
// first, so it exists exactly when the other two make a whole snapshot that
// no guest has run from since.
const (
	fileSnapState = "snapshot.state"
	fileSnapMem   = "snapshot.mem"
	fileSnapInfo  = "snapshot.json"
)

// snapshotInfo is snapshot.json: what the snapshot was made with. A restore
// needs all of it to be as it is now.
type snapshotInfo struct {
	CreatedAt    time.Time   `json:"created_at"`
	Firecracker  string      `json:"firecracker_version"`
	Kernel       string      `json:"kernel"`
	KernelSHA256 string      `json:"kernel_sha256"`
	Initrd       string      `json:"initrd,omitempty"`
	InitrdSHA256 string      `json:"initrd_sha256,omitempty"`
	VCPU         int         `json:"vcpu"`
	MemoryMiB    int         `json:"memory_mib"`
	Drives       []snapDrive `json:"drives"`
	Tap          string      `json:"tap"`
	MAC          string      `json:"mac"`
	VsockPath    string      `json:"vsock_path"`
	CID          uint32      `json:"cid"`
	StateSHA256  string      `json:"state_sha256"`
	StateBytes   int64       `json:"state_bytes"`
	MemBytes     int64       `json:"mem_bytes"`
	WasPaused    bool        `json:"was_paused,omitempty"`
	BootID       string      `json:"boot_id,omitempty"` // the guest's, from its agent at suspend
}

type snapDrive struct {
	ID   string `json:"id"`
	Path string `json:"path"`
}

func snapStatePath(vm *store.VM) string { return filepath.Join(vm.Dir, fileSnapState) }
func snapMemPath(vm *store.VM) string   { return filepath.Join(vm.Dir, fileSnapMem) }
func snapInfoPath(vm *store.VM) string  { return filepath.Join(vm.Dir, fileSnapInfo) }

// readSnapshotInfo reads snapshot.json; os.ErrNotExist when there is none.
func readSnapshotInfo(vm *store.VM) (*snapshotInfo, error) {
	b, err := os.ReadFile(snapInfoPath(vm))
	if err != nil {
		return nil, err
	}
	var si snapshotInfo
	if err := json.Unmarshal(b, &si); err != nil {
		return nil, fmt.Errorf("snapshot identity %s is damaged: %v", snapInfoPath(vm), err)
	}
	return &si, nil
}

// writeSnapshotInfo writes snapshot.json durably: temp file, fsync,
// rename, fsync of the directory.
func writeSnapshotInfo(vm *store.VM, si *snapshotInfo) error {
	b, err := json.MarshalIndent(si, "", "  ")
	if err != nil {
		return err
	}
	tmp := snapInfoPath(vm) + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, snapInfoPath(vm)); err != nil {
		return err
	}
	return syncDir(vm.Dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// removeSnapshot removes the snapshot: the identity at once (durably),
// the state and memory files renamed aside and unlinked in the background
// (unlinking a memory file of many extents takes hundreds of ms, which a
// restore should not wait for). Leftovers of an earlier removal cut short
// go too.
func removeSnapshot(vm *store.VM) error {
	var errs []error
	for _, p := range []string{snapInfoPath(vm), snapInfoPath(vm) + ".tmp"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	suffix := fmt.Sprintf(".discard-%d", time.Now().UnixNano())
	for _, p := range []string{snapMemPath(vm), snapStatePath(vm)} {
		if err := os.Rename(p, p+suffix); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("removing the snapshot of vm %s: %w", vm.Name, err)
	}
	if err := syncDir(vm.Dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing the snapshot of vm %s: %w", vm.Name, err)
	}
	discarded, _ := filepath.Glob(filepath.Join(vm.Dir, "snapshot.*.discard-*"))
	if len(discarded) > 0 {
		go func() {
			for _, p := range discarded {
				_ = os.Remove(p)
			}
		}()
	}
	return nil
}

// snapshotDiskBytes is what the snapshot's files take on disk.
func snapshotDiskBytes(vm *store.VM) int64 {
	var n int64
	for _, p := range []string{snapStatePath(vm), snapMemPath(vm), snapInfoPath(vm)} {
		n += allocatedBytes(p)
	}
	return n
}

// allocatedBytes is st_blocks*512 of path (0 when it is missing).
func allocatedBytes(path string) int64 {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0
	}
	return st.Blocks * 512
}

// snapshotAPI is the api view of a suspended VM's snapshot.
func snapshotAPI(vm *store.VM) *api.Snapshot {
	if vm.State != api.StateSuspended {
		return nil
	}
	si, err := readSnapshotInfo(vm)
	if err != nil {
		return &api.Snapshot{DiskBytes: snapshotDiskBytes(vm)}
	}
	return &api.Snapshot{CreatedAt: si.CreatedAt, Firecracker: si.Firecracker, DiskBytes: snapshotDiskBytes(vm), MemoryBytes: si.MemBytes}
}

// punchZeroPages deallocates the 4 KiB blocks of path that hold only zeros
// (Firecracker writes the whole guest memory, zero pages included) and
// returns the bytes the file then takes on disk. Holes already there are
// skipped with SEEK_DATA.
func punchZeroPages(path string) (int64, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	const block = 4096
	size := fi.Size()
	buf := make([]byte, 1<<20)
	var runStart int64 = -1 // start of the current run of zero blocks
	flush := func(end int64) error {
		if runStart >= 0 && end > runStart {
			if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, runStart, end-runStart); err != nil {
				return fmt.Errorf("punching holes in %s: %w", path, err)
			}
		}
		runStart = -1
		return nil
	}
	off := int64(0)
	for off < size {
		data, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
		if err != nil {
			if errors.Is(err, unix.ENXIO) {
				break // only a hole is left
			}
			data = off // SEEK_DATA unsupported: read everything
		}
		if data > off {
			if err := flush(off); err != nil {
				return 0, err
			}
			off = data
		}
		n, err := f.ReadAt(buf, off)
		if n == 0 {
			if err != nil && err != io.EOF {
				return 0, err
			}
			break
		}
		for i := 0; i < n; i += block {
			end := min(i+block, n)
			if allZero(buf[i:end]) {
				if runStart < 0 {
					runStart = off + int64(i)
				}
			} else if err := flush(off + int64(i)); err != nil {
				return 0, err
			}
		}
		off += int64(n)
	}
	if err := flush(off); err != nil {
		return 0, err
	}
	if err := f.Sync(); err != nil {
		return 0, err
	}
	return allocatedBytes(path), nil
}

var zeroBlock [4096]byte

func allZero(b []byte) bool { return bytes.Equal(b, zeroBlock[:len(b)]) }

// fileHashes caches sha256 of kernels and initrds by path, size and mtime,
// so a restore does not re-read them.
var fileHashes sync.Map // hashKey -> string

type hashKey struct {
	path  string
	size  int64
	mtime int64
}

func fileSHA256(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	k := hashKey{path, fi.Size(), fi.ModTime().UnixNano()}
	if v, ok := fileHashes.Load(k); ok {
		return v.(string), nil
	}
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	sum := hex.EncodeToString(h.Sum(nil))
	fileHashes.Store(k, sum)
	return sum, nil
}

// fcVersions caches `firecracker --version` by binary path, size and mtime.
var fcVersions sync.Map // hashKey -> string

// binaryVersion is the version the Firecracker binary at bin reports
// ("1.14.2").
func binaryVersion(bin string) (string, error) {
	path, err := exec.LookPath(bin)
	if err != nil {
		return "", err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	k := hashKey{path, fi.Size(), fi.ModTime().UnixNano()}
	if v, ok := fcVersions.Load(k); ok {
		return v.(string), nil
	}
	out, err := exec.Command(path, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("running %s --version: %w", path, err)
	}
	for _, f := range strings.Fields(string(out)) {
		if v, ok := strings.CutPrefix(f, "v"); ok && len(v) > 0 && v[0] >= '0' && v[0] <= '9' {
			fcVersions.Store(k, v)
			return v, nil
		}
	}
	return "", fmt.Errorf("%s --version printed no version: %q", path, strings.TrimSpace(string(out)))
}

// versionAtLeast compares dotted versions ("1.16.0" >= "1.16").
func versionAtLeast(v, min string) bool {
	a, b := strings.Split(strings.SplitN(v, "-", 2)[0], "."), strings.Split(min, ".")
	for i := range b {
		var x, y int
		if i < len(a) {
			fmt.Sscanf(a[i], "%d", &x)
		}
		fmt.Sscanf(b[i], "%d", &y)
		if x != y {
			return x > y
		}
	}
	return true
}
