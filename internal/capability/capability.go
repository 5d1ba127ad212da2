// Package capability finds out what the host kernel can do by trying it:
// opening a device node and asking it a harmless question, or sending a
// read-only netlink query. A device node or a module directory can exist
// while the kernel behind it is missing (dmsetup's package creates
// /dev/mapper/control on kernels without device-mapper), so existence alone
// proves nothing. Doctor (internal/preflight), the storage driver choice and
// tests that need a capability all ask here, so they agree.
package capability

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Unavailable says a capability is missing and why, in words for a user.
type Unavailable struct {
	What   string // "device-mapper", "nf_tables", ...
	Reason string
}

func (e *Unavailable) Error() string { return e.What + " unavailable: " + e.Reason }

// IsUnavailable reports whether err says the capability is missing (as
// opposed to a probe that could not run).
func IsUnavailable(err error) bool {
	var u *Unavailable
	return errors.As(err, &u)
}

// Paths of the kernel interfaces the probes use; tests point them elsewhere.
type Paths struct {
	DMControl   string // /dev/mapper/control
	KVMDev      string // /dev/kvm
	TunDev      string // /dev/net/tun
	LoopControl string // /dev/loop-control
	ProcMisc    string // /proc/misc: misc devices the kernel registered
	SysModule   string // /sys/module
	ModulesDir  string // /lib/modules/<release>
	ProcConfig  string // /proc/config.gz
	CPUInfo     string // /proc/cpuinfo
}

// HostPaths are the real ones.
func HostPaths() Paths {
	return Paths{
		DMControl:   "/dev/mapper/control",
		KVMDev:      "/dev/kvm",
		TunDev:      "/dev/net/tun",
		LoopControl: "/dev/loop-control",
		ProcMisc:    "/proc/misc",
		SysModule:   "/sys/module",
		ModulesDir:  filepath.Join("/lib/modules", release()),
		ProcConfig:  "/proc/config.gz",
		CPUInfo:     "/proc/cpuinfo",
	}
}

func release() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

// DeviceMapper asks the kernel's device-mapper for its version with the
// DM_VERSION ioctl on /dev/mapper/control and returns it ("4.48.0"). An
// error of type *Unavailable says device-mapper is missing and why.
func DeviceMapper() (string, error) { return HostPaths().DeviceMapper() }

// DeviceMapper is the DM_VERSION probe on p's paths.
func (p Paths) DeviceMapper() (string, error) {
	const what = "device-mapper"
	fd, err := unix.Open(p.DMControl, unix.O_RDWR|unix.O_CLOEXEC, 0)
	switch {
	case err == nil:
	case errors.Is(err, unix.ENODEV), errors.Is(err, unix.ENXIO):
		return "", &Unavailable{what, fmt.Sprintf("the kernel has no device-mapper driver (opening %s: %v)", p.DMControl, err)}
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		// Only root may open the control node; the kernel's list of misc
		// devices says whether the driver is there.
		if p.miscRegistered("device-mapper") {
			return "registered (not asked: opening " + p.DMControl + " needs root)", nil
		}
		if p.moduleAvailable("dm-mod") {
			return "dm-mod module available (not asked: opening " + p.DMControl + " needs root)", nil
		}
		return "", &Unavailable{what, fmt.Sprintf("not registered in %s and no dm-mod module (cannot ask %s without root)", p.ProcMisc, p.DMControl)}
	case errors.Is(err, unix.ENOENT):
		if p.miscRegistered("device-mapper") {
			return "registered (" + p.DMControl + " is missing; dmsetup creates it)", nil
		}
		return "", &Unavailable{what, fmt.Sprintf("%s does not exist and the kernel lists no device-mapper in %s", p.DMControl, p.ProcMisc)}
	default:
		return "", &Unavailable{what, fmt.Sprintf("opening %s: %v", p.DMControl, err)}
	}
	defer unix.Close(fd)
	var io unix.DmIoctl
	io.Version = [3]uint32{unix.DM_VERSION_MAJOR, 0, 0}
	io.Data_size = uint32(unsafe.Sizeof(io))
	io.Data_start = uint32(unsafe.Sizeof(io))
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(dmVersionIoctl), uintptr(unsafe.Pointer(&io))); errno != 0 {
		if errno == unix.ENOTTY || errno == unix.EINVAL {
			return "", &Unavailable{what, fmt.Sprintf("%s does not answer DM_VERSION (%v): not a device-mapper control node", p.DMControl, errno)}
		}
		return "", &Unavailable{what, fmt.Sprintf("DM_VERSION on %s: %v", p.DMControl, errno)}
	}
	return fmt.Sprintf("%d.%d.%d", io.Version[0], io.Version[1], io.Version[2]), nil
}

// dmVersionIoctl is _IOWR(0xfd, DM_VERSION_CMD=0, struct dm_ioctl) with
// sizeof(struct dm_ioctl) = 312.
const dmVersionIoctl = 3<<30 | unix.SizeofDmIoctl<<16 | 0xfd<<8 | 0

// KVM opens /dev/kvm read-write and asks KVM_GET_API_VERSION (12 on every
// kernel since 2.6.22).
func KVM() error { return HostPaths().KVM() }

// KVM is the KVM_GET_API_VERSION probe on p's paths.
func (p Paths) KVM() error {
	const what = "KVM"
	fd, err := unix.Open(p.KVMDev, unix.O_RDWR|unix.O_CLOEXEC, 0)
	switch {
	case err == nil:
	case errors.Is(err, unix.ENOENT):
		return &Unavailable{what, p.KVMDev + " does not exist: this host has no KVM (nested virtualisation off, or not a Linux host with VT-x/AMD-V)"}
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		return &Unavailable{what, p.KVMDev + " is not read-write for this user"}
	case errors.Is(err, unix.ENODEV), errors.Is(err, unix.ENXIO):
		return &Unavailable{what, fmt.Sprintf("%s exists but the kernel has no KVM behind it (%v): load kvm_intel or kvm_amd", p.KVMDev, err)}
	default:
		return &Unavailable{what, fmt.Sprintf("opening %s: %v", p.KVMDev, err)}
	}
	defer unix.Close(fd)
	v, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), kvmGetAPIVersion, 0)
	if errno != 0 {
		return &Unavailable{what, fmt.Sprintf("%s does not answer KVM_GET_API_VERSION (%v): not a KVM device", p.KVMDev, errno)}
	}
	if v != 12 {
		return &Unavailable{what, fmt.Sprintf("%s speaks KVM API version %d, not 12", p.KVMDev, v)}
	}
	return nil
}

const kvmGetAPIVersion = 0xAE00 // _IO(KVMIO=0xAE, 0)

// Tun opens /dev/net/tun read-write. Without TUNSETIFF nothing is created.
func Tun() error { return HostPaths().Tun() }

// Tun is the tun probe on p's paths.
func (p Paths) Tun() error {
	const what = "tun"
	fd, err := unix.Open(p.TunDev, unix.O_RDWR|unix.O_CLOEXEC, 0)
	switch {
	case err == nil:
		unix.Close(fd)
		return nil
	case errors.Is(err, unix.ENOENT):
		return &Unavailable{what, p.TunDev + " missing: taps cannot be created"}
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		return &Unavailable{what, p.TunDev + " is not read-write for this user: Firecracker opens its tap through it"}
	case errors.Is(err, unix.ENODEV), errors.Is(err, unix.ENXIO):
		return &Unavailable{what, fmt.Sprintf("%s exists but the kernel has no tun driver (%v)", p.TunDev, err)}
	}
	return &Unavailable{what, fmt.Sprintf("opening %s: %v", p.TunDev, err)}
}

// Loop opens /dev/loop-control (as root) or looks it up in the kernel's
// misc devices (otherwise: the privileged helper uses it, not this user).
func Loop() (string, error) { return HostPaths().Loop() }

// Loop is the loop probe on p's paths.
func (p Paths) Loop() (string, error) {
	const what = "loop devices"
	fd, err := unix.Open(p.LoopControl, unix.O_RDWR|unix.O_CLOEXEC, 0)
	switch {
	case err == nil:
		unix.Close(fd)
		return p.LoopControl + " answers", nil
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM), errors.Is(err, unix.ENOENT):
		if p.miscRegistered("loop-control") {
			return "loop-control registered by the kernel", nil
		}
		if p.moduleAvailable("loop") {
			return "loop module available (loads on first use)", nil
		}
		return "", &Unavailable{what, fmt.Sprintf("%s missing and no loop driver registered or installed", p.LoopControl)}
	case errors.Is(err, unix.ENODEV), errors.Is(err, unix.ENXIO):
		return "", &Unavailable{what, fmt.Sprintf("%s exists but the kernel has no loop driver (%v)", p.LoopControl, err)}
	}
	return "", &Unavailable{what, fmt.Sprintf("opening %s: %v", p.LoopControl, err)}
}

// miscRegistered reports whether /proc/misc lists name ("236 device-mapper").
func (p Paths) miscRegistered(name string) bool {
	f, err := os.Open(p.ProcMisc)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) == 2 && fields[1] == name {
			return true
		}
	}
	return false
}

// moduleAvailable reports whether module (as named in modules.dep, "dm-mod")
// is loaded, built in or installed for the running kernel.
func (p Paths) moduleAvailable(module string) bool {
	if _, err := os.Stat(filepath.Join(p.SysModule, strings.ReplaceAll(module, "-", "_"))); err == nil {
		return true
	}
	for _, f := range []string{"modules.builtin", "modules.dep"} {
		if b, err := os.ReadFile(filepath.Join(p.ModulesDir, f)); err == nil && containsModule(string(b), module) {
			return true
		}
	}
	return false
}

// containsModule finds ".../name.ko" (optionally compressed) in a
// modules.builtin or modules.dep listing.
func containsModule(list, name string) bool {
	for _, line := range strings.Split(list, "\n") {
		path, _, _ := strings.Cut(line, ":")
		base := filepath.Base(strings.TrimSpace(path))
		if i := strings.Index(base, ".ko"); i > 0 && base[:i] == name {
			return true
		}
	}
	return false
}

// DMSnapshots says whether banger's dm storage driver can work here:
// device-mapper answers (DeviceMapper) and its snapshot target is loaded,
// built in or installed (the kernel loads it when a table names it).
func DMSnapshots() (string, error) { return HostPaths().DMSnapshots() }

// DMSnapshots is the dm driver probe on p's paths.
func (p Paths) DMSnapshots() (string, error) {
	v, err := p.DeviceMapper()
	if err != nil {
		return "", err
	}
	dm := "device-mapper " + v
	if _, err := os.Stat(filepath.Join(p.SysModule, "dm_snapshot")); err == nil {
		return dm + ", snapshot target loaded", nil
	}
	if b, err := os.ReadFile(filepath.Join(p.ModulesDir, "modules.builtin")); err == nil && containsModule(string(b), "dm-snapshot") {
		return dm + ", snapshot target built into the kernel", nil
	}
	if b, err := os.ReadFile(filepath.Join(p.ModulesDir, "modules.dep")); err == nil && containsModule(string(b), "dm-snapshot") {
		return dm + ", dm-snapshot module available (loaded on first use)", nil
	}
	return "", &Unavailable{"device-mapper snapshots", fmt.Sprintf("%s answers but kernel %s has no snapshot target (dm-snapshot not loaded, built in or installed)", dm, filepath.Base(p.ModulesDir))}
}
