package daemon

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// knownHostsFile is banger's own OpenSSH known_hosts file in the state
// directory, shared by `banger vm ssh` and `banger ssh-config`.
const knownHostsFile = "known_hosts"

// forgetHostKeys removes from the known_hosts file at path every line whose
// host field names any of names: a plain host, a bracketed `[host]:port`,
// one entry of a comma-separated list, or a hashed `|1|salt|hash` entry of
// the plain host. A VM re-created under the same name or address gets a new
// host key, and accept-new would refuse it while the old key is recorded.
// Lines that do not match (comments, wildcard patterns, other hosts) are
// kept byte for byte. The file is rewritten atomically with its mode kept;
// a missing file is not an error.
func forgetHostKeys(path string, names ...string) error {
	want := map[string]bool{}
	for _, n := range names {
		if n = strings.ToLower(strings.TrimSpace(n)); n != "" {
			want[n] = true
		}
	}
	if len(want) == 0 {
		return nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading known hosts %s: %w", path, err)
	}
	lines := bytes.SplitAfter(b, []byte("\n"))
	var out bytes.Buffer
	removed := 0
	for _, line := range lines {
		if knownHostsLineMatches(string(line), want) {
			removed++
			continue
		}
		out.Write(line)
	}
	if removed == 0 {
		return nil
	}
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("reading known hosts %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".known_hosts-*")
	if err != nil {
		return fmt.Errorf("rewriting known hosts %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if _, err := tmp.Write(out.Bytes()); err != nil {
		tmp.Close()
		return fmt.Errorf("rewriting known hosts %s: %w", path, err)
	}
	if err := tmp.Chmod(st.Mode().Perm()); err != nil {
		tmp.Close()
		return fmt.Errorf("rewriting known hosts %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("rewriting known hosts %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("rewriting known hosts %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("rewriting known hosts %s: %w", path, err)
	}
	return nil
}

// knownHostsLineMatches reports whether one known_hosts line records a key
// for any host in want (lower-case names).
func knownHostsLineMatches(line string, want map[string]bool) bool {
	fields := strings.Fields(line)
	if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
		return false
	}
	hosts := fields[0]
	if strings.HasPrefix(hosts, "@") { // @cert-authority / @revoked marker
		if len(fields) < 2 {
			return false
		}
		hosts = fields[1]
	}
	for _, h := range strings.Split(hosts, ",") {
		if strings.HasPrefix(h, "|1|") {
			if hashedHostMatches(h, want) {
				return true
			}
			continue
		}
		if want[strings.ToLower(stripPort(h))] {
			return true
		}
	}
	return false
}

// stripPort turns `[host]:port` into host; other forms are returned as is.
func stripPort(h string) string {
	if strings.HasPrefix(h, "[") {
		if i := strings.Index(h, "]"); i > 0 {
			return h[1:i]
		}
	}
	return h
}

// hashedHostMatches checks an OpenSSH hashed host (`|1|base64(salt)|
// base64(HMAC-SHA1(salt, host))`) against each wanted name.
func hashedHostMatches(h string, want map[string]bool) bool {
	parts := strings.Split(h, "|")
	if len(parts) != 4 {
		return false
	}
	salt, err1 := base64.StdEncoding.DecodeString(parts[2])
	sum, err2 := base64.StdEncoding.DecodeString(parts[3])
	if err1 != nil || err2 != nil {
		return false
	}
	for name := range want {
		mac := hmac.New(sha1.New, salt)
		mac.Write([]byte(name))
		if hmac.Equal(mac.Sum(nil), sum) {
			return true
		}
	}
	return false
}

// forgetKnownHosts drops the host keys recorded for a VM (its name,
// NAME.vm and its address) from banger's known_hosts file. Call it when a
// VM is deleted or created: a failure is logged, never fatal.
func (d *Daemon) forgetKnownHosts(name, ip string) {
	path := filepath.Join(d.paths.StateDir, knownHostsFile)
	if err := forgetHostKeys(path, name, name+".vm", ip); err != nil {
		d.log.Warn("forgetting ssh host keys", "vm", name, "err", err)
	}
}
