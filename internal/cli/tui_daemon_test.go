//go:build !banger_front

package cli

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestUnitFileGolden(t *testing.T) {
	got := unitFile("/opt/banger/bin/bangerd", []string{
		"BANGER_CONFIG=/home/dev/.config/banger/config.toml",
		"BANGER_STATE_DIR=/home/dev/banger state/100%",
	})
	path := filepath.Join("testdata", "bangerd.service.golden")
	if *updateGolden {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading golden (run with -update to create it): %v", err)
	}
	if got != string(want) {
		t.Fatalf("unit file differs (rerun with -update if intended)\n--- got ---\n%s\n--- want ---\n%s", got, want)
	}
}

// standInSystemctl puts a systemctl on PATH that records its arguments,
// one call per line, and returns the record's path. It answers "running" to
// is-system-running and fails like systemctl without a bus on calls that
// contain fail ("*" for all).
func standInSystemctl(t *testing.T, fail string) string {
	t.Helper()
	bin := t.TempDir()
	rec := filepath.Join(bin, "calls")
	script := "#!/bin/sh\necho \"$*\" >> " + rec + "\n"
	if fail != "" {
		script += "case \"$*\" in *" + fail + "*) echo 'Failed to connect to bus: No medium found' >&2; exit 1;; esac\n"
	}
	script += "case \"$*\" in *is-system-running*) echo running;; esac\n"
	if err := os.WriteFile(filepath.Join(bin, "systemctl"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	return rec
}

// userBus makes XDG_RUNTIME_DIR/bus a listening socket, as a user
// session has.
func userBus(t *testing.T, env map[string]string) {
	t.Helper()
	rt := env["XDG_RUNTIME_DIR"]
	if err := os.MkdirAll(rt, 0o700); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", filepath.Join(rt, "bus"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
}

func TestDaemonInstallAndUninstall(t *testing.T) {
	rec := standInSystemctl(t, "")
	env := envWithConfig(t, "")
	userBus(t, env)
	bangerd := filepath.Join(env["HOME"], "bin", "bangerd")
	os.MkdirAll(filepath.Dir(bangerd), 0o755)
	if err := os.WriteFile(bangerd, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	env["BANGER_DAEMON_BIN"] = bangerd
	unit := filepath.Join(env["HOME"], ".config", "systemd", "user", "bangerd.service")

	out, errOut, code := runCLI(t, env, "daemon", "install")
	if code != 0 {
		t.Fatalf("install: exit %d: %s%s", code, out, errOut)
	}
	b, err := os.ReadFile(unit)
	if err != nil {
		t.Fatalf("unit not written: %v", err)
	}
	for _, want := range []string{
		"ExecStart=" + bangerd + "\n",
		"KillMode=process\n",
		"Restart=on-failure\n",
		"Environment=BANGER_CONFIG=" + env["BANGER_CONFIG"] + "\n",
		"Environment=BANGER_STATE_DIR=" + env["BANGER_STATE_DIR"] + "\n",
		"WantedBy=default.target\n",
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("unit lacks %q:\n%s", want, b)
		}
	}
	calls, _ := os.ReadFile(rec)
	if got, want := string(calls), "--user is-system-running\n--user daemon-reload\n--user enable --now bangerd.service\n"; got != want {
		t.Fatalf("systemctl calls after install:\n%s\nwant:\n%s", got, want)
	}
	os.Remove(rec)

	out, errOut, code = runCLI(t, env, "daemon", "install", "--uninstall")
	if code != 0 {
		t.Fatalf("uninstall: exit %d: %s%s", code, out, errOut)
	}
	if _, err := os.Stat(unit); !os.IsNotExist(err) {
		t.Fatalf("unit still there after uninstall: %v", err)
	}
	calls, _ = os.ReadFile(rec)
	if got, want := string(calls), "--user is-system-running\n--user disable --now bangerd.service\n--user daemon-reload\n"; got != want {
		t.Fatalf("systemctl calls after uninstall:\n%s\nwant:\n%s", got, want)
	}

	// Uninstalling again is a no-op that says so.
	out, _, code = runCLI(t, env, "daemon", "install", "--uninstall")
	if code != 0 || !strings.Contains(out, "not installed") {
		t.Fatalf("second uninstall: exit %d, %q", code, out)
	}
}

func TestDaemonInstallErrors(t *testing.T) {
	t.Run("systemctl fails", func(t *testing.T) {
		standInSystemctl(t, "enable")
		env := envWithConfig(t, "")
		userBus(t, env)
		bangerd := filepath.Join(env["HOME"], "bangerd")
		os.WriteFile(bangerd, []byte("#!/bin/sh\n"), 0o755)
		env["BANGER_DAEMON_BIN"] = bangerd
		_, errOut, code := runCLI(t, env, "daemon", "install")
		if code != ExitFailed || !strings.Contains(errOut, "Failed to connect to bus") || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
			t.Fatalf("exit %d, stderr %q", code, errOut)
		}
	})
	t.Run("no bangerd", func(t *testing.T) {
		rec := standInSystemctl(t, "")
		env := envWithConfig(t, "") // BANGER_DAEMON_BIN names a missing file
		_, errOut, code := runCLI(t, env, "daemon", "install")
		if code != ExitFailed || !strings.Contains(errOut, "bangerd not found") {
			t.Fatalf("exit %d, stderr %q", code, errOut)
		}
		if _, err := os.Stat(rec); err == nil {
			t.Fatal("systemctl ran although bangerd is missing")
		}
	})
}

// TestDaemonInstallWithoutUserSession: with no user manager to talk to,
// install and uninstall change nothing (no unit written or removed, no
// daemon stopped, no systemctl call that needs the bus) and say what to do.
func TestDaemonInstallWithoutUserSession(t *testing.T) {
	setup := func(t *testing.T) (map[string]string, string, string) {
		rec := standInSystemctl(t, "*")
		env := envWithConfig(t, "")
		bangerd := filepath.Join(env["HOME"], "bangerd")
		os.WriteFile(bangerd, []byte("#!/bin/sh\n"), 0o755)
		env["BANGER_DAEMON_BIN"] = bangerd
		env["USER"] = "dev"
		return env, rec, filepath.Join(env["HOME"], ".config", "systemd", "user", "bangerd.service")
	}
	wantRefusal := func(t *testing.T, errOut string, code int, want string) {
		t.Helper()
		if code != ExitFailed || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
			t.Fatalf("exit %d, stderr %q; want exit 1 and one line", code, errOut)
		}
		for _, w := range []string{"no systemd user session", want, "nothing was changed", "loginctl enable-linger dev", "login session"} {
			if !strings.Contains(errOut, w) {
				t.Errorf("stderr lacks %q: %q", w, errOut)
			}
		}
	}
	t.Run("no bus socket", func(t *testing.T) {
		env, rec, unit := setup(t)
		out, errOut, code := runCLI(t, env, "daemon", "install")
		wantRefusal(t, errOut, code, "no user manager listens in "+env["XDG_RUNTIME_DIR"])
		if out != "" {
			t.Errorf("stdout %q", out)
		}
		if _, err := os.Stat(unit); err == nil {
			t.Error("unit written without a user session")
		}
		if _, err := os.Stat(rec); err == nil {
			t.Error("systemctl ran although no bus socket exists")
		}
	})
	t.Run("bus socket but no manager answers", func(t *testing.T) {
		env, rec, unit := setup(t)
		userBus(t, env)
		_, errOut, code := runCLI(t, env, "daemon", "install")
		wantRefusal(t, errOut, code, `answered "Failed to connect to bus: No medium found"`)
		if _, err := os.Stat(unit); err == nil {
			t.Error("unit written without a user manager")
		}
		if calls, _ := os.ReadFile(rec); string(calls) != "--user is-system-running\n" {
			t.Errorf("systemctl calls %q, want only is-system-running", calls)
		}
	})
	t.Run("no XDG_RUNTIME_DIR", func(t *testing.T) {
		env, _, _ := setup(t)
		delete(env, "XDG_RUNTIME_DIR")
		_, errOut, code := runCLI(t, env, "daemon", "install")
		wantRefusal(t, errOut, code, "XDG_RUNTIME_DIR is not set")
	})
	t.Run("uninstall keeps the unit", func(t *testing.T) {
		env, rec, unit := setup(t)
		os.MkdirAll(filepath.Dir(unit), 0o755)
		os.WriteFile(unit, []byte("[Unit]\n"), 0o644)
		_, errOut, code := runCLI(t, env, "daemon", "install", "--uninstall")
		wantRefusal(t, errOut, code, "no user manager listens")
		if _, err := os.Stat(unit); err != nil {
			t.Errorf("unit removed without a user session: %v", err)
		}
		if _, err := os.Stat(rec); err == nil {
			t.Error("systemctl ran")
		}
	})
	t.Run("running daemon keeps running", func(t *testing.T) {
		env, _, _ := setup(t)
		td := startInProcessDaemon(t, env)
		_, errOut, code := runCLI(t, env, "daemon", "install")
		wantRefusal(t, errOut, code, "no user manager listens")
		out, _, code := runCLI(t, env, "daemon", "status", "--json")
		if code != 0 || !strings.Contains(out, `"running": true`) || td.stopped() {
			t.Fatalf("daemon stopped by a refused install: exit %d, %s", code, out)
		}
	})
}
