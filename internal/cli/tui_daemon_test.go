package cli

import (
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
// one call per line, and returns the record's path.
func standInSystemctl(t *testing.T, fail string) string {
	t.Helper()
	bin := t.TempDir()
	rec := filepath.Join(bin, "calls")
	script := "#!/bin/sh\necho \"$*\" >> " + rec + "\n"
	if fail != "" {
		script += "case \"$*\" in *" + fail + "*) echo 'Failed to connect to bus: No medium found' >&2; exit 1;; esac\n"
	}
	if err := os.WriteFile(filepath.Join(bin, "systemctl"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	return rec
}

func TestDaemonInstallAndUninstall(t *testing.T) {
	rec := standInSystemctl(t, "")
	env := envWithConfig(t, "")
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
	if got, want := string(calls), "--user daemon-reload\n--user enable --now bangerd.service\n"; got != want {
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
	if got, want := string(calls), "--user disable --now bangerd.service\n--user daemon-reload\n"; got != want {
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
