// Reading and writing an ext4 image through debugfs.

package ext4

import (
	"bytes"
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"banger/internal/command"
)

// Dirent is one entry of a directory in an image.
type Dirent struct {
	Inode    uint64
	Mode     uint32 // file type and permission bits, as in st_mode
	UID, GID uint32
	Name     string
}

// IsDir reports whether the entry is a directory.
func (d Dirent) IsDir() bool { return d.Mode&0o170000 == 0o040000 }

// List returns the entries of dir in the image at disk, "." and ".."
// included, in directory order.
func List(ctx context.Context, disk, dir string) ([]Dirent, error) {
	out, err := debugfs(ctx, disk, false, "ls -p "+quote(dir))
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", dir, err)
	}
	ents, err := parseLs(out)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", dir, err)
	}
	return ents, nil
}

// parseLs reads `ls -p` output: one /INODE/MODE/UID/GID/NAME/SIZE/ record
// per line. A name may hold any byte but "/" (newlines included), so the
// output is split on "/", not on lines: after the leading empty field
// every record is seven fields, the last one the newline(s) that end it.
// Entries of inode 0 (free slots) are skipped.
func parseLs(out []byte) ([]Dirent, error) {
	s := string(out)
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	f := strings.Split(s, "/")
	if f[0] != "" || (len(f)-1)%7 != 0 {
		return nil, fmt.Errorf("unreadable debugfs listing %q", trimQ(s))
	}
	var ents []Dirent
	for i := 1; i < len(f); i += 7 {
		r := f[i : i+7]
		if r[6] == "" || strings.Trim(r[6], "\n") != "" {
			return nil, fmt.Errorf("unreadable debugfs listing near %q", trimQ(strings.Join(r, "/")))
		}
		ino, err1 := strconv.ParseUint(r[0], 10, 64)
		mode, err2 := strconv.ParseUint(r[1], 8, 32)
		uid, err3 := strconv.ParseUint(r[2], 10, 32)
		gid, err4 := strconv.ParseUint(r[3], 10, 32)
		if err1 != nil || err2 != nil || err3 != nil || err4 != nil {
			return nil, fmt.Errorf("unreadable debugfs listing near %q", trimQ(strings.Join(r, "/")))
		}
		if ino == 0 {
			continue
		}
		ents = append(ents, Dirent{Inode: ino, Mode: uint32(mode), UID: uint32(uid), GID: uint32(gid), Name: r[4]})
	}
	return ents, nil
}

var flagsRe = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`Flags: 0x([0-9a-fA-F]+)`) })

// inodeFlags returns the i_flags of the inode at p in the image.
func inodeFlags(ctx context.Context, disk, p string) (uint64, error) {
	out, err := debugfs(ctx, disk, false, "stat "+quote(p))
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", p, err)
	}
	m := flagsRe().FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("reading %s: no flags in debugfs stat output %q", p, trimQ(string(out)))
	}
	return strconv.ParseUint(string(m[1]), 16, 64)
}

// debugfs runs one request (read-only) or a script of requests (with
// write, one per line on stdin) against disk. debugfs reports a failed
// request on stderr and still exits 0, so anything on stderr but its
// version banner is an error.
func debugfs(ctx context.Context, disk string, write bool, script string) ([]byte, error) {
	var out, errOut []byte
	var err error
	if write {
		out, errOut, err = command.OutputInput(ctx, script, "debugfs", "-w", "-f", "-", disk)
	} else {
		out, errOut, err = command.Output(ctx, "debugfs", "-R", script, disk)
	}
	if err != nil {
		return out, err
	}
	var bad []string
	for _, line := range strings.Split(string(errOut), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || banner().MatchString(line) {
			continue
		}
		bad = append(bad, line)
	}
	if len(bad) > 0 {
		return out, fmt.Errorf("debugfs: %s", command.Trim(strings.Join(bad, "; ")))
	}
	return out, nil
}

var banner = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^debugfs [0-9][0-9.]*[^ ]* \([^)]*\)$`) })

// quote makes p one debugfs argument: in double quotes, a quote doubled.
// Newlines and carriage returns end a debugfs request and cannot be quoted.
func quote(p string) string {
	return `"` + strings.ReplaceAll(p, `"`, `""`) + `"`
}

// quotable reports whether quote(p) reaches debugfs as p.
func quotable(p string) bool { return !strings.ContainsAny(p, "\n\r\x00") }

func trimQ(s string) string {
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return string(bytes.TrimSpace([]byte(s)))
}
