package preflight

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/config"
)

func fakeFirecracker(t *testing.T, dir, version string) string {
	t.Helper()
	p := filepath.Join(dir, "firecracker")
	script := "#!/bin/sh\necho run >> " + filepath.Join(dir, "runs") + "\necho 'Firecracker " + version + "'\n"
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func runs(t *testing.T, dir string) int {
	b, _ := os.ReadFile(filepath.Join(dir, "runs"))
	return strings.Count(string(b), "run")
}

// TestCacheRunsBinaryOncePerFileVersion: the daemon's cache spares a
// process per create, and a changed binary is checked again.
func TestCacheRunsBinaryOncePerFileVersion(t *testing.T) {
	dir := t.TempDir()
	bin := fakeFirecracker(t, dir, "v1.16.1")
	env := Env{Config: config.Config{FirecrackerBin: bin}, Cache: NewCache()}
	for range 3 {
		rs := Run(context.Background(), env, Firecracker)
		if rs[0].Status != Pass || !strings.Contains(rs[0].Detail, "v1.16.1") {
			t.Fatalf("check: %+v", rs[0])
		}
	}
	if n := runs(t, dir); n != 1 {
		t.Fatalf("binary ran %d times, want 1", n)
	}
	time.Sleep(10 * time.Millisecond)
	fakeFirecracker(t, dir, "v1.17.0")
	now := time.Now()
	os.Chtimes(bin, now, now)
	rs := Run(context.Background(), env, Firecracker)
	if !strings.Contains(rs[0].Detail, "v1.17.0") || runs(t, dir) != 2 {
		t.Fatalf("changed binary not re-checked: %+v, runs %d", rs[0], runs(t, dir))
	}
}

func TestIgnoredFailureBecomesWarning(t *testing.T) {
	env := Env{Config: config.Config{FirecrackerBin: "/nonexistent/firecracker", IgnorePreflightErrors: []string{"firecracker"}}}
	rs := Run(context.Background(), env, Firecracker)
	if rs[0].Status != Warn || !rs[0].Ignored {
		t.Fatalf("ignored failure: %+v", rs[0])
	}
	if err := Err(rs); err != nil {
		t.Fatalf("ignored failure still fails: %v", err)
	}
	env.Config.IgnorePreflightErrors = nil
	rs = Run(context.Background(), env, Firecracker)
	if err := Err(rs); err == nil || !strings.Contains(err.Error(), "firecracker") || !strings.Contains(err.Error(), "runtime install") {
		t.Fatalf("failure: %v", err)
	}
}

func TestAgentMustBeStatic(t *testing.T) {
	rs := Run(context.Background(), Env{Config: config.Config{VsockAgentPath: "/bin/sh"}}, Agent)
	if rs[0].Status != Fail || !strings.Contains(rs[0].Detail, "dynamically linked") {
		t.Fatalf("dynamic agent: %+v", rs[0])
	}
	rs = Run(context.Background(), Env{Config: config.Config{VsockAgentPath: "/nonexistent"}}, Agent)
	if rs[0].Status != Fail {
		t.Fatalf("missing agent: %+v", rs[0])
	}
}
