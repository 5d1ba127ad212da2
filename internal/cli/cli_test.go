package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/api"
)

// runCLI runs the CLI in-process with a private environment.
func runCLI(t *testing.T, env map[string]string, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	a := &app{build: BuildInfo{Version: "test"}, stdout: &out, stderr: &errb, getenv: func(k string) string { return env[k] }}
	code := a.run(context.Background(), args)
	return out.String(), errb.String(), code
}

func envWithConfig(t *testing.T, toml string) map[string]string {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfg, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	return map[string]string{
		"HOME":              dir,
		"BANGER_CONFIG":     cfg,
		"BANGER_STATE_DIR":  filepath.Join(dir, "state"),
		"XDG_RUNTIME_DIR":   filepath.Join(dir, "run"),
		"BANGER_DAEMON_BIN": filepath.Join(dir, "no-such-bangerd"),
	}
}

func TestConfigBadInputExitsTwo(t *testing.T) {
	tests := []struct {
		name, toml, want string
	}{
		{"malformed toml", "log_level = \"info\"\nstop_grace = \n", "config.toml:2"},
		{"unknown key", "stop_grase = \"10s\"\n", "did you mean stop_grace"},
		{"negative duration", "stop_grace = \"-5s\"\n", "stop_grace"},
		{"invalid cidr", "cidr = \"10.0.0.0/33\"\n", "cidr"},
		{"bridge ip outside", "cidr = \"10.9.0.0/24\"\nbridge_ip = \"10.8.0.1\"\n", "bridge_ip"},
		{"dns listen addr", "dns_listen_addr = \"localhost\"\n", "dns_listen_addr"},
		{"legacy conflict", "vsock_agent_path = \"/a\"\nvsock_ping_helper_path = \"/b\"\n", "vsock_ping_helper_path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := envWithConfig(t, tt.toml)
			out, errOut, code := runCLI(t, env, "config", "show")
			if code != ExitUsage {
				t.Fatalf("exit %d, want 2; stdout %q stderr %q", code, out, errOut)
			}
			if !strings.Contains(errOut, tt.want) || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
				t.Fatalf("stderr %q: want one line containing %q", errOut, tt.want)
			}
			if _, err := os.Stat(env["BANGER_STATE_DIR"]); err == nil {
				t.Fatal("a rejected config still created the state dir")
			}
		})
	}
}

func TestLegacyKeyWarnsAndMaps(t *testing.T) {
	env := envWithConfig(t, "vsock_ping_helper_path = \"/opt/agent\"\n")
	out, errOut, code := runCLI(t, env, "config", "show")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !strings.Contains(errOut, "vsock_agent_path") {
		t.Fatalf("no warning naming the new key: %q", errOut)
	}
	if !strings.Contains(out, "/opt/agent") {
		t.Fatalf("legacy value not mapped: %s", out)
	}
}

func TestVMCreateRejectsBeforeCallingDaemon(t *testing.T) {
	env := envWithConfig(t, "")
	tests := [][]string{
		{"vm", "create", "Bad_Name"},
		{"vm", "create", "ok", "--vcpu", "0"},
		{"vm", "create", "ok", "--vcpu", "33"},
		{"vm", "create", "ok", "--memory", "64"},
		{"vm", "create", "ok", "--disk-size", "lots"},
		{"vm", "create", "a", "--name", "b"},
		{"vm", "set", "a"},
		{"vm", "set", "a", "--nat", "--no-nat"},
		{"vm", "list", "-o", "tall"},
		{"vm", "create", "--bogus-flag"},
	}
	for _, args := range tests {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			_, errOut, code := runCLI(t, env, args...)
			if code != ExitUsage {
				t.Fatalf("exit %d, want 2 (stderr %q)", code, errOut)
			}
			if strings.Contains(errOut, "starting it") || strings.Contains(errOut, "goroutine") {
				t.Fatalf("touched the daemon or leaked a trace: %q", errOut)
			}
		})
	}
}

func TestDaemonStatusWithoutDaemonExitsThree(t *testing.T) {
	env := envWithConfig(t, "")
	out, _, code := runCLI(t, env, "daemon", "status")
	if code != ExitNoDaemon || !strings.Contains(out, "not running") {
		t.Fatalf("exit %d out %q", code, out)
	}
	if _, err := os.Stat(filepath.Join(env["XDG_RUNTIME_DIR"], "banger", "bangerd.sock")); err == nil {
		t.Fatal("status started a daemon")
	}
}

func TestNoDaemonBinaryIsAClearError(t *testing.T) {
	env := envWithConfig(t, "")
	_, errOut, code := runCLI(t, env, "vm", "list")
	if code != ExitFailed || !strings.Contains(errOut, "bangerd") || strings.Contains(errOut, "exit status") {
		t.Fatalf("exit %d stderr %q", code, errOut)
	}
}

func TestResolveRefs(t *testing.T) {
	vms := []api.VM{
		{ID: "aaaa111111", Name: "dev"},
		{ID: "aaaa222222", Name: "web"},
		{ID: "bbbb333333", Name: "aaaa111111x"},
	}
	res := resolveRefs(vms, []string{"dev", "aaaa2", "aaaa", "nope", "aaaa111111", "bbbb"})
	var got []string
	for _, r := range res {
		if r.err != nil {
			got = append(got, r.ref+"=err")
		} else {
			got = append(got, r.ref+"="+r.vm.Name)
		}
	}
	want := "dev=dev aaaa2=web aaaa=err nope=err bbbb=aaaa111111x"
	if strings.Join(got, " ") != want {
		t.Fatalf("got %q\nwant %q", strings.Join(got, " "), want)
	}
	// exact name beats an ID prefix
	if v, err := resolveOne(vms, "aaaa111111x"); err != nil || v.Name != "aaaa111111x" {
		t.Fatalf("exact name: %v %v", v, err)
	}
}
