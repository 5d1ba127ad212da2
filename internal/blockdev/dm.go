package blockdev

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// DMNode returns the kernel name ("dm-3") of the device-mapper device
// name, or "" when it does not exist.
func DMNode(sys, name string) (string, error) {
	dirs, err := filepath.Glob(filepath.Join(sys, "block", "dm-*"))
	if err != nil {
		return "", err
	}
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "dm", "name"))
		if err == nil && strings.TrimSpace(string(b)) == name {
			return filepath.Base(d), nil
		}
	}
	return "", nil
}

// DevNum reads the "major:minor" of the block device with kernel name node.
func DevNum(sys, node string) (string, error) {
	b, err := os.ReadFile(filepath.Join(sys, "block", node, "dev"))
	if err != nil {
		return "", fmt.Errorf("reading device number of %s: %w", node, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// Kind of a block device a table refers to.
type Kind int

const (
	KindOther Kind = iota
	KindLoop
	KindDM
)

// Device is a block device found by its number.
type Device struct {
	Kind Kind
	Node string // kernel name: "loop3", "dm-0"
	Name string // dm name for KindDM
}

// DeviceAt finds the block device with number majmin ("7:3").
func DeviceAt(sys, majmin string) (Device, error) {
	maj, min, ok := strings.Cut(majmin, ":")
	if _, err := strconv.ParseUint(maj, 10, 32); err != nil || !ok {
		return Device{}, fmt.Errorf("bad device number %q", majmin)
	}
	if _, err := strconv.ParseUint(min, 10, 32); err != nil {
		return Device{}, fmt.Errorf("bad device number %q", majmin)
	}
	dir := filepath.Join(sys, "dev", "block", majmin)
	ue, err := os.ReadFile(filepath.Join(dir, "uevent"))
	if err != nil {
		return Device{}, fmt.Errorf("finding block device %s: %w", majmin, err)
	}
	var d Device
	for _, line := range strings.Split(string(ue), "\n") {
		if v, ok := strings.CutPrefix(line, "DEVNAME="); ok {
			d.Node = strings.TrimSpace(v)
		}
	}
	if d.Node == "" || strings.Contains(d.Node, "/") {
		return Device{}, fmt.Errorf("block device %s has no usable name", majmin)
	}
	if _, err := os.Stat(filepath.Join(dir, "loop")); err == nil || (strings.HasPrefix(d.Node, "loop") && maj == strconv.Itoa(LoopMajor)) {
		d.Kind = KindLoop
		return d, nil
	}
	if b, err := os.ReadFile(filepath.Join(dir, "dm", "name")); err == nil {
		d.Kind, d.Name = KindDM, strings.TrimSpace(string(b))
	}
	return d, nil
}

// Target is one line of a device-mapper table.
type Target struct {
	Start, Length int64
	Type          string
	Args          []string
}

// ErrTarget marks a table target banger does not make.
var ErrTarget = errors.New("unexpected device-mapper target")

// Devices lists the block devices ("major:minor") the target uses: linear
// reads one, snapshot an origin and a COW store, zero none. Other targets
// give ErrTarget.
func (t Target) Devices() ([]string, error) {
	switch t.Type {
	case "zero", "error":
		return nil, nil
	case "linear":
		if len(t.Args) == 2 {
			return t.Args[:1], nil
		}
	case "snapshot":
		if len(t.Args) == 4 {
			return t.Args[:2], nil
		}
	default:
		return nil, fmt.Errorf("%w %q", ErrTarget, t.Type)
	}
	return nil, fmt.Errorf("%w: %s with %d arguments", ErrTarget, t.Type, len(t.Args))
}

// ParseTable parses `dmsetup table NAME` output.
func ParseTable(text string) ([]Target, error) {
	var out []Target
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) < 3 {
			return nil, fmt.Errorf("bad device-mapper table line %q", line)
		}
		start, err1 := strconv.ParseInt(f[0], 10, 64)
		length, err2 := strconv.ParseInt(f[1], 10, 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("bad device-mapper table line %q", line)
		}
		out = append(out, Target{Start: start, Length: length, Type: f[2], Args: f[3:]})
	}
	return out, nil
}

// Holders names what keeps a dm device open: stacked devices, processes
// with it open, and mounts of it.
func Holders(sys, node, name string) []string {
	var out []string
	hs, _ := os.ReadDir(filepath.Join(sys, "block", node, "holders"))
	for _, h := range hs {
		b, err := os.ReadFile(filepath.Join(sys, "block", h.Name(), "dm", "name"))
		if err == nil {
			out = append(out, "dm "+strings.TrimSpace(string(b)))
		} else {
			out = append(out, h.Name())
		}
	}
	fds, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	seen := map[string]bool{}
	for _, fd := range fds {
		l, err := os.Readlink(fd)
		if err != nil || (l != "/dev/"+node && l != "/dev/mapper/"+name) {
			continue
		}
		pid := strings.Split(fd, "/")[2]
		if seen[pid] {
			continue
		}
		seen[pid] = true
		comm, _ := os.ReadFile("/proc/" + pid + "/comm")
		out = append(out, fmt.Sprintf("pid %s (%s)", pid, strings.TrimSpace(string(comm))))
	}
	if majmin, err := DevNum(sys, node); err == nil {
		mi, _ := os.ReadFile("/proc/self/mountinfo")
		for _, line := range strings.Split(string(mi), "\n") {
			if f := strings.Fields(line); len(f) > 4 && f[2] == majmin {
				out = append(out, "mount "+f[4])
			}
		}
	}
	return out
}
