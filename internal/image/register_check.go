package image

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"runtime"
	"strconv"
	"strings"

	"banger/internal/command"
	"banger/internal/hostops"
)

// Checks `image register` runs before copying anything: a kernel must be
// something Firecracker boots, a rootfs an ext4 filesystem with an init the
// kernel will run. Each error is one line naming the file and the problem.

// CheckKernel refuses a file that is no kernel Firecracker can boot: on
// x86_64 an ELF executable for the machine (vmlinux) or a bzImage (the
// "HdrS" boot header at 0x202); on aarch64 an ELF or the arm64 Image/PE
// format ("ARM\x64" at 0x38).
func CheckKernel(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("kernel %s: %w", p, err)
	}
	defer f.Close()
	head := make([]byte, 0x210)
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return fmt.Errorf("kernel %s: %w", p, err)
	}
	head = head[:n]
	if bytes.HasPrefix(head, []byte(elf.ELFMAG)) {
		ef, err := elf.NewFile(f)
		if err != nil {
			return fmt.Errorf("kernel %s starts like an ELF file but is not one (%v)", p, err)
		}
		defer ef.Close()
		if want := hostMachine(); ef.Machine != want {
			return fmt.Errorf("kernel %s is an ELF file for %s, not for this host (%s)", p, machineName(ef.Machine), machineName(want))
		}
		if ef.Type != elf.ET_EXEC && ef.Type != elf.ET_DYN {
			return fmt.Errorf("kernel %s is an ELF %s, not an executable kernel image (vmlinux)", p, ef.Type)
		}
		return nil
	}
	switch runtime.GOARCH {
	case "amd64":
		if len(head) >= 0x206 && string(head[0x202:0x206]) == "HdrS" && head[0x1fe] == 0x55 && head[0x1ff] == 0xaa {
			return nil // bzImage
		}
	case "arm64":
		if len(head) >= 0x3c && string(head[0x38:0x3c]) == "ARM\x64" {
			return nil
		}
	}
	return fmt.Errorf("kernel %s is not a kernel image: neither an ELF vmlinux nor a bzImage boot header (\"HdrS\" at 0x202); use an uncompressed vmlinux", p)
}

func hostMachine() elf.Machine {
	if runtime.GOARCH == "arm64" {
		return elf.EM_AARCH64
	}
	return elf.EM_X86_64
}

func machineName(m elf.Machine) string {
	switch m {
	case elf.EM_X86_64:
		return "x86_64"
	case elf.EM_AARCH64:
		return "aarch64"
	}
	return strings.TrimPrefix(m.String(), "EM_")
}

// ErrNoDebugfs means the rootfs check cannot look inside the image.
var ErrNoDebugfs = errors.New("debugfs is missing; install e2fsprogs")

// initCandidates are the paths the kernel tries, in its order, when the
// command line names no init= (banger's does not).
var initCandidates = []string{"/sbin/init", "/etc/init", "/bin/init", "/bin/sh"}

// CheckRootfs checks an image to register: an ext4 superblock that fits
// the file, and an init the kernel will run (following symlinks inside the
// image, read with debugfs as the caller: nothing is mounted). It returns
// the init it found, e.g. "/sbin/init -> /usr/lib/systemd/systemd".
func CheckRootfs(ctx context.Context, p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", fmt.Errorf("rootfs %s: %w", p, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return "", fmt.Errorf("rootfs %s: %w", p, err)
	}
	fsBytes, err := hostops.Ext4Bytes(f)
	f.Close()
	switch {
	case errors.Is(err, hostops.ErrNotExt4):
		return "", fmt.Errorf("rootfs %s is not an ext4 filesystem (no ext4 superblock)", p)
	case err != nil:
		return "", fmt.Errorf("rootfs %s: %v", p, err)
	case !fi.Mode().IsRegular():
		return "", fmt.Errorf("rootfs %s is not a regular file", p)
	case fsBytes > fi.Size():
		return "", fmt.Errorf("rootfs %s is truncated: %d bytes, its ext4 filesystem needs %d", p, fi.Size(), fsBytes)
	}
	if _, err := command.LookPath("debugfs"); err != nil {
		return "", fmt.Errorf("checking rootfs %s for an init: %w", p, ErrNoDebugfs)
	}
	fs := &extFS{ctx: ctx, image: p}
	var first string
	for _, c := range initCandidates {
		target, why, err := fs.executable(c)
		if err != nil {
			return "", fmt.Errorf("rootfs %s: reading it with debugfs: %v", p, err)
		}
		if why == "" {
			if target != c {
				return c + " -> " + target, nil
			}
			return c, nil
		}
		if first == "" {
			first = why
		}
	}
	return "", fmt.Errorf("rootfs %s has no init: none of %s is an executable file in it (%s); use an image with an init system, such as `banger image build debian`",
		p, strings.Join(initCandidates, ", "), first)
}

// extFS reads paths inside an ext4 image with debugfs.
type extFS struct {
	ctx   context.Context
	image string
	runs  int
}

type extStat struct {
	found bool
	typ   string // "regular", "directory", "symlink", ...
	mode  uint32
	link  string // a fast symlink's target
}

// Limits of a lookup: symlinks followed (plenty for an init; the kernel
// allows 40) and debugfs runs in all.
const (
	maxLinks       = 10
	maxDebugfsRuns = 100
)

// executable resolves name inside the image the way the kernel would
// (symlinks in any component, relative to the directory holding them) and
// says why it is not an executable file ("" when it is).
func (x *extFS) executable(name string) (target, why string, err error) {
	hops := 0
	p := path.Clean(name)
restart:
	parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
	cur := "/"
	for i, comp := range parts {
		next := path.Join(cur, comp)
		st, err := x.stat(next)
		if err != nil {
			return "", "", err
		}
		last := i == len(parts)-1
		switch {
		case !st.found:
			return next, fmt.Sprintf("%s does not exist", describe(name, next)), nil
		case st.typ == "symlink":
			if hops++; hops > maxLinks {
				return next, fmt.Sprintf("%s: too many levels of symbolic links", name), nil
			}
			dest := st.link
			if dest == "" {
				if dest, err = x.run("cat " + quote(next)); err != nil {
					return "", "", err
				}
			}
			if !path.IsAbs(dest) {
				dest = path.Join(cur, dest)
			}
			p = path.Join(append([]string{dest}, parts[i+1:]...)...)
			goto restart
		case !last && st.typ != "directory":
			return next, fmt.Sprintf("%s is not a directory", describe(name, next)), nil
		case last && st.typ != "regular":
			return next, fmt.Sprintf("%s is a %s, not a file", describe(name, next), st.typ), nil
		case last && st.mode&0o111 == 0:
			return next, fmt.Sprintf("%s is not executable (mode %04o)", describe(name, next), st.mode&0o7777), nil
		}
		cur = next
	}
	return p, "", nil
}

func describe(name, resolved string) string {
	if name == resolved {
		return name
	}
	return name + " -> " + resolved
}

func (x *extFS) stat(p string) (extStat, error) {
	out, err := x.run("stat " + quote(p))
	if err != nil {
		if strings.Contains(err.Error(), "File not found by ext2_lookup") {
			return extStat{}, nil
		}
		return extStat{}, err
	}
	st := extStat{found: true}
	for _, line := range strings.Split(out, "\n") {
		fields := strings.Fields(line)
		for i := 0; i+1 < len(fields); i++ {
			switch fields[i] {
			case "Type:":
				if st.typ == "" {
					st.typ = fields[i+1]
				}
			case "Mode:":
				if m, err := strconv.ParseUint(fields[i+1], 8, 32); err == nil && st.mode == 0 {
					st.mode = uint32(m)
				}
			}
		}
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Fast link dest:"); ok {
			st.link = strings.Trim(strings.TrimSpace(v), `"`)
		}
	}
	if st.typ == "" {
		return extStat{}, fmt.Errorf("debugfs stat %s: no inode type in its output", p)
	}
	return st, nil
}

// run runs one debugfs request; debugfs reports a failed request on stderr
// and still exits 0, so any stderr line past its banner is the error.
func (x *extFS) run(req string) (string, error) {
	if x.runs++; x.runs > maxDebugfsRuns {
		return "", errors.New("too many lookups")
	}
	out, errb, err := command.Output(x.ctx, "debugfs", "-R", req, x.image)
	if err != nil {
		return "", fmt.Errorf("debugfs %s: %v: %s", req, errors.Unwrap(err), strings.TrimSpace(string(errb)))
	}
	for _, line := range strings.Split(string(errb), "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "debugfs ") {
			return "", errors.New(line)
		}
	}
	return strings.TrimSpace(string(out)), nil
}

// quote puts a path in double quotes for debugfs's command parser.
func quote(p string) string { return `"` + p + `"` }
