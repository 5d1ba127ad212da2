//go:build system

package test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fields checks that obj has every key (and each is of the JSON kind given:
// s string, n number, b bool, a array, o object).
func fields(t *testing.T, what string, obj map[string]any, want map[string]string) {
	t.Helper()
	for k, kind := range want {
		v, ok := obj[k]
		if !ok {
			t.Errorf("%s: missing field %q in %v", what, k, obj)
			continue
		}
		okKind := false
		switch kind {
		case "s":
			_, okKind = v.(string)
		case "n":
			_, okKind = v.(float64)
		case "b":
			_, okKind = v.(bool)
		case "a":
			_, okKind = v.([]any)
		case "o":
			_, okKind = v.(map[string]any)
		}
		if !okKind {
			t.Errorf("%s: field %q = %#v, want kind %s", what, k, v, kind)
		}
	}
}

func parseJSON(t *testing.T, what, out string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("%s: output is not JSON: %v\n%s", what, err, out)
	}
}

var vmFields = map[string]string{
	"id": "s", "name": "s", "state": "s", "image": "s", "vcpu": "n", "memory_mib": "n", "disk_bytes": "n",
	"work_disk_bytes": "n", "nat": "b", "ip": "s", "mac": "s", "tap": "s", "cid": "n", "dir": "s",
	"api_socket": "s", "vsock_path": "s", "root_disk": "s", "work_disk": "s", "storage_driver": "s",
	"dns_name": "s", "created_at": "s",
}

// TestReadCommandsJSON checks that every read command's --json output
// parses and carries the fields the README documents.
func TestReadCommandsJSON(t *testing.T) {
	e := newEnv(t, "")
	e.registerImage()
	e.ok("vm", "create", "alpha", "--nat")
	e.ok("vm", "create", "beta", "--no-start")

	t.Run("vm list", func(t *testing.T) {
		var l struct{ VMs []map[string]any }
		parseJSON(t, "vm list", e.ok("vm", "list", "--json"), &l)
		if len(l.VMs) != 2 {
			t.Fatalf("want 2 vms, got %d", len(l.VMs))
		}
		for _, v := range l.VMs {
			fields(t, "vm list vms[]", v, vmFields)
		}
	})
	t.Run("vm show", func(t *testing.T) {
		var v map[string]any
		parseJSON(t, "vm show", e.ok("vm", "show", "alpha", "--json"), &v)
		fields(t, "vm show", v, vmFields)
		fields(t, "vm show (running)", v, map[string]string{"pid": "n", "started_at": "s"})
		if v["state"] != "running" || v["nat"] != true {
			t.Fatalf("alpha: %v", v)
		}
	})
	t.Run("vm stats", func(t *testing.T) {
		var s struct{ Stats []map[string]any }
		parseJSON(t, "vm stats", e.ok("vm", "stats", "--json"), &s)
		if len(s.Stats) != 2 {
			t.Fatalf("want stats for 2 vms, got %v", s.Stats)
		}
		for _, st := range s.Stats {
			fields(t, "vm stats stats[]", st, map[string]string{"vm": "s", "name": "s", "state": "s", "cpu_percent": "n", "rss_bytes": "n"})
			if st["name"] == "alpha" {
				fields(t, "vm stats (running)", st, map[string]string{"pid": "n"})
			}
		}
	})
	t.Run("vm health", func(t *testing.T) {
		var hs []map[string]any
		parseJSON(t, "vm health", e.ok("vm", "health", "alpha", "--json"), &hs)
		if len(hs) != 1 {
			t.Fatalf("want 1 result, got %v", hs)
		}
		fields(t, "vm health[]", hs[0], map[string]string{"vm": "s", "healthy": "b", "state": "s", "rtt_ms": "n"})
		// An unhealthy (stopped) VM still gives JSON, and exit 1.
		out, _, code := e.banger("vm", "health", "beta", "--json")
		parseJSON(t, "vm health beta", out, &hs)
		if code != 1 || len(hs) != 1 || hs[0]["healthy"] != false {
			t.Fatalf("health of stopped beta: exit %d, %v", code, hs)
		}
		fields(t, "vm health[] (unhealthy)", hs[0], map[string]string{"vm": "s", "healthy": "b", "state": "s", "reason": "s"})
	})
	t.Run("image list", func(t *testing.T) {
		var l struct{ Images []map[string]any }
		parseJSON(t, "image list", e.ok("image", "list", "--json"), &l)
		if len(l.Images) != 1 {
			t.Fatalf("want 1 image, got %v", l.Images)
		}
		fields(t, "image list images[]", l.Images[0], map[string]string{"id": "s", "name": "s", "rootfs_path": "s", "size_bytes": "n", "stale": "b", "created_at": "s"})
	})
	t.Run("daemon status", func(t *testing.T) {
		var st map[string]any
		parseJSON(t, "daemon status", e.ok("daemon", "status", "--json"), &st)
		fields(t, "daemon status", st, map[string]string{"running": "b", "pid": "n", "version": "s", "commit": "s", "socket": "s",
			"state_dir": "s", "started_at": "s", "uptime_s": "n", "vm_counts": "o", "euid": "n", "privileged": "s"})
		if c := st["vm_counts"].(map[string]any); c["running"] != 1.0 || c["stopped"] != nil && c["created"] == nil && c["stopped"] == nil {
			t.Fatalf("vm_counts: %v", c)
		}
	})
	t.Run("doctor", func(t *testing.T) {
		out, errOut, code := e.banger("doctor", "--json")
		if code != 0 && code != 1 {
			t.Fatalf("doctor --json: exit %d: %s", code, errOut)
		}
		var d map[string]any
		parseJSON(t, "doctor", out, &d)
		fields(t, "doctor", d, map[string]string{"ok": "b", "checks": "a"})
		for _, c := range d["checks"].([]any) {
			fields(t, "doctor checks[]", c.(map[string]any), map[string]string{"name": "s", "status": "s", "detail": "s"})
		}
		if (code == 0) != (d["ok"] == true) {
			t.Fatalf("doctor exit %d but ok=%v", code, d["ok"])
		}
	})
	t.Run("config show", func(t *testing.T) {
		var c map[string]any
		parseJSON(t, "config show", e.ok("config", "show", "--json"), &c)
		fields(t, "config show", c, map[string]string{"file": "s", "entries": "a"})
		found := false
		for _, en := range c["entries"].([]any) {
			m := en.(map[string]any)
			fields(t, "config show entries[]", m, map[string]string{"key": "s", "value": "s", "source": "s"})
			if m["key"] == "stop_grace" && m["value"] == "3s" && m["source"] != "default" {
				found = true
			}
		}
		if !found {
			t.Fatalf("config show lacks stop_grace=3s from the file: %v", c["entries"])
		}
	})
	t.Run("runtime show", func(t *testing.T) {
		// Install a bundle from a local manifest (fcfake stands in for
		// Firecracker), so the schema is checked on a real installation.
		sum := func(p string) string {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			h := sha256.Sum256(b)
			return hex.EncodeToString(h[:])
		}
		kernel := filepath.Join(e.dir, "vmlinux")
		manifest := filepath.Join(e.dir, "bundle.toml")
		m := fmt.Sprintf("[firecracker]\npath = %q\nsha256 = %q\n\n[kernel]\npath = %q\nsha256 = %q\n",
			e.bins.fcfake, sum(e.bins.fcfake), kernel, sum(kernel))
		if err := os.WriteFile(manifest, []byte(m), 0o644); err != nil {
			t.Fatal(err)
		}
		e.ok("runtime", "install", "--manifest", manifest, "--agent", e.bins.agentBin)
		out := e.ok("runtime", "show", "--json")
		var r map[string]any
		parseJSON(t, "runtime show", out, &r)
		fields(t, "runtime show", r, map[string]string{"dir": "s", "installed_at": "s", "files": "a", "ok": "b"})
		if r["ok"] != true {
			t.Fatalf("fresh bundle not ok: %s", out)
		}
	})
	t.Run("no human text on stdout", func(t *testing.T) {
		for _, args := range [][]string{{"vm", "list", "--json"}, {"image", "list", "--json"}, {"vm", "stats", "--json"}} {
			out := strings.TrimSpace(e.ok(args...))
			if !strings.HasPrefix(out, "{") && !strings.HasPrefix(out, "[") {
				t.Fatalf("%v: %q", args, out)
			}
		}
	})
}
