package agent

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

func (s *server) readHealthz() (Healthz, error) {
	h := Healthz{Status: "ok", Version: s.opts.Version, Hostname: s.opts.Hostname, BootID: s.opts.BootID}
	if !s.opts.Legacy {
		h.Protocol = s.opts.Protocol
	}
	var err error
	if h.Hostname == "" {
		if h.Hostname, err = s.procString("sys/kernel/hostname"); err != nil {
			return Healthz{}, err
		}
	}
	if h.BootID == "" {
		if h.BootID, err = s.procString("sys/kernel/random/boot_id"); err != nil {
			return Healthz{}, err
		}
	}
	if h.UptimeS, err = s.uptime(); err != nil {
		return Healthz{}, err
	}
	return h, nil
}

func (s *server) readInfo() (Info, error) {
	var info Info
	var err error
	if info.Kernel, err = s.procString("sys/kernel/osrelease"); err != nil {
		return Info{}, err
	}
	if info.OSRelease, err = osRelease(filepath.Join(s.opts.EtcRoot, "os-release")); err != nil {
		return Info{}, err
	}
	if info.Load, err = loadAvg(filepath.Join(s.opts.ProcRoot, "loadavg")); err != nil {
		return Info{}, err
	}
	if info.MemTotalBytes, info.MemAvailableBytes, err = memInfo(filepath.Join(s.opts.ProcRoot, "meminfo")); err != nil {
		return Info{}, err
	}
	if info.RootDisk, err = s.disk(s.opts.RootPath); err != nil {
		return Info{}, err
	}
	if info.HomeDisk, err = s.disk(s.opts.HomePath); err != nil {
		return Info{}, err
	}
	logins := s.opts.Logins
	if logins == nil {
		logins = func() (int, error) { return countLogins(s.opts.ProcRoot, s.opts.UtmpPath) }
	}
	if info.SSHLogins, err = logins(); err != nil {
		return Info{}, fmt.Errorf("counting ssh logins: %w", err)
	}
	return info, nil
}

func (s *server) disk(path string) (DiskUsage, error) {
	d, err := s.opts.Statfs(path)
	if err != nil {
		return DiskUsage{}, fmt.Errorf("reading disk usage of %s: %w", path, err)
	}
	d.Path = path
	return d, nil
}

func (s *server) procString(rel string) (string, error) {
	p := filepath.Join(s.opts.ProcRoot, rel)
	b, err := os.ReadFile(p)
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", p, err)
	}
	return strings.TrimSpace(string(b)), nil
}

func (s *server) uptime() (float64, error) {
	if !s.opts.BootTime.IsZero() {
		return s.opts.Now().Sub(s.opts.BootTime).Seconds(), nil
	}
	line, err := s.procString("uptime")
	if err != nil {
		return 0, err
	}
	fields := strings.Fields(line)
	if len(fields) == 0 {
		return 0, fmt.Errorf("parsing %s: empty", filepath.Join(s.opts.ProcRoot, "uptime"))
	}
	up, err := strconv.ParseFloat(fields[0], 64)
	if err != nil {
		return 0, fmt.Errorf("parsing %s: %w", filepath.Join(s.opts.ProcRoot, "uptime"), err)
	}
	return up, nil
}

// osRelease returns PRETTY_NAME from an os-release file, or NAME VERSION_ID
// when PRETTY_NAME is missing.
func osRelease(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	vals := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if !ok || strings.HasPrefix(k, "#") {
			continue
		}
		if uq, err := strconv.Unquote(v); err == nil {
			v = uq
		} else {
			v = strings.Trim(v, `"'`)
		}
		vals[k] = v
	}
	if p := vals["PRETTY_NAME"]; p != "" {
		return p, nil
	}
	if n := strings.TrimSpace(vals["NAME"] + " " + vals["VERSION_ID"]); n != "" {
		return n, nil
	}
	return "", fmt.Errorf("parsing %s: no PRETTY_NAME or NAME", path)
}

func loadAvg(path string) ([3]float64, error) {
	var load [3]float64
	b, err := os.ReadFile(path)
	if err != nil {
		return load, fmt.Errorf("reading %s: %w", path, err)
	}
	fields := strings.Fields(string(b))
	if len(fields) < 3 {
		return load, fmt.Errorf("parsing %s: want 3 load averages, got %q", path, strings.TrimSpace(string(b)))
	}
	for i := range load {
		if load[i], err = strconv.ParseFloat(fields[i], 64); err != nil {
			return load, fmt.Errorf("parsing %s: %w", path, err)
		}
	}
	return load, nil
}

func memInfo(path string) (total, avail uint64, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, fmt.Errorf("reading %s: %w", path, err)
	}
	found := 0
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || (fields[0] != "MemTotal:" && fields[0] != "MemAvailable:") {
			continue
		}
		kb, err := strconv.ParseUint(fields[1], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("parsing %s %s: %w", path, fields[0], err)
		}
		if fields[0] == "MemTotal:" {
			total = kb * 1024
		} else {
			avail = kb * 1024
		}
		found++
	}
	if found != 2 {
		return 0, 0, fmt.Errorf("parsing %s: MemTotal or MemAvailable missing", path)
	}
	return total, avail, nil
}

func statfs(path string) (DiskUsage, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return DiskUsage{}, err
	}
	bs := uint64(st.Bsize)
	return DiskUsage{Path: path, TotalBytes: st.Blocks * bs, UsedBytes: (st.Blocks - st.Bfree) * bs}, nil
}

// sshSession matches the process title OpenSSH gives the process of one
// user session: "sshd: root@pts/0", "sshd-session: root@notty" (OpenSSH
// 9.8 and later run sessions in sshd-session).
var sshSession = regexp.MustCompile(`^sshd(-session)?: [^ ]+@(pts/[0-9]+|notty)`)

// countLogins counts active SSH logins in two ways and returns the larger:
// USER_PROCESS entries in utmp on a pts line whose process is still alive,
// and sshd session processes. Each source alone can miss logins (some
// distributions stop writing utmp; a one-shot `ssh host cmd` has no pts), and
// an interactive login shows up in both, so the maximum neither misses nor
// double counts.
func countLogins(procRoot, utmpPath string) (int, error) {
	fromUtmp, err := utmpLogins(procRoot, utmpPath)
	if err != nil {
		return 0, err
	}
	fromProc, err := sshdSessions(procRoot)
	if err != nil {
		return 0, err
	}
	return max(fromUtmp, fromProc), nil
}

func sshdSessions(procRoot string) (int, error) {
	entries, err := os.ReadDir(procRoot)
	if err != nil {
		return 0, fmt.Errorf("listing %s: %w", procRoot, err)
	}
	n := 0
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(procRoot, e.Name(), "cmdline"))
		if err != nil {
			continue // the process is gone, or not readable
		}
		if sshSession.Match(bytes.TrimRight(b, "\x00 ")) {
			n++
		}
	}
	return n, nil
}

func utmpLogins(procRoot, utmpPath string) (int, error) {
	b, err := os.ReadFile(utmpPath)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", utmpPath, err)
	}
	recs, err := parseUtmp(b)
	if err != nil {
		return 0, fmt.Errorf("parsing %s: %w", utmpPath, err)
	}
	n := 0
	for _, r := range recs {
		if r.Type != utmpUserProcess || !strings.HasPrefix(r.Line, "pts/") {
			continue
		}
		if _, err := os.Stat(filepath.Join(procRoot, strconv.Itoa(int(r.PID)))); err != nil {
			continue // stale entry: the session's process is gone
		}
		n++
	}
	return n, nil
}
