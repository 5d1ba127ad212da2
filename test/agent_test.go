//go:build system

package test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/api"
)

// TestAgentHealth: create waits for the agent; vm health reports a
// round-trip time; an agent that never answers leaves the VM running but
// unhealthy, with a reason, within the boot deadline, and exit 1.
func TestAgentHealth(t *testing.T) {
	e := newEnv(t, "")
	e.registerImage()
	e.ok("vm", "create", "ok1")
	var hs []api.Health
	if err := json.Unmarshal([]byte(e.ok("vm", "health", "ok1", "--json")), &hs); err != nil {
		t.Fatal(err)
	}
	if len(hs) != 1 || !hs[0].Healthy || hs[0].RTTMillis <= 0 || hs[0].Hostname != "ok1" {
		t.Fatalf("health: %+v", hs)
	}
	e.ok("daemon", "stop")

	e.extra = []string{"FCFAKE_AGENT_DOWN=1"}
	t0 := time.Now()
	_, errOut, code := e.banger("vm", "create", "mute")
	took := time.Since(t0)
	if code != 1 || !strings.Contains(errOut, "unhealthy") || !strings.Contains(errOut, "did not answer") {
		t.Fatalf("create with a mute agent: code %d stderr %q", code, errOut)
	}
	if took > 8*time.Second+5*time.Second {
		t.Fatalf("unhealthy verdict took %s, boot_deadline is 8s", took)
	}
	if v := e.vm("mute"); v.State != api.StateRunning {
		t.Fatalf("mute vm not left running: %s", v.State)
	}
	out, _, code := e.banger("vm", "health", "mute")
	if code != 1 || !strings.Contains(out, "unhealthy") {
		t.Fatalf("vm health on a mute agent: code %d out %q", code, out)
	}
	e.ok("vm", "delete", "ok1", "mute")
	e.assertClean()
}

// TestLegacyConfigKey: a config that names the agent by its old key works
// and warns once, naming the new key.
func TestLegacyConfigKey(t *testing.T) {
	e := newEnv(t, "")
	cfgPath := filepath.Join(e.dir, "config.toml")
	b, _ := os.ReadFile(cfgPath)
	cfg := strings.Replace(string(b), "vsock_agent_path", "vsock_ping_helper_path", 1)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	e.registerImage()
	_, errOut, code := e.banger("vm", "create", "legacy")
	if code != 0 {
		t.Fatalf("create with legacy key: %d %s", code, errOut)
	}
	if strings.Count(errOut, "vsock_agent_path") != 1 {
		t.Fatalf("want one warning naming vsock_agent_path, stderr %q", errOut)
	}
	e.ok("vm", "delete", "legacy")
	e.assertClean()
}

// TestAutoStopIdle: with auto_stop_stale_after set, a VM with no SSH logins
// and no tap traffic is stopped, with the reason recorded.
func TestAutoStopIdle(t *testing.T) {
	e := newEnv(t, "auto_stop_stale_after = \"3s\"\n")
	e.registerImage()
	e.ok("vm", "create", "idle")
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if v := e.vm("idle"); v.State == api.StateStopped {
			if !strings.Contains(v.StopReason, "idle") {
				t.Fatalf("stop reason %q", v.StopReason)
			}
			e.ok("vm", "delete", "idle")
			e.assertClean()
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("idle vm still %s", e.vm("idle").State)
}
