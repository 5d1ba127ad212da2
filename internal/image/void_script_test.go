package image

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestVoidScriptsLint runs `bash -n` and shellcheck on every script under
// images/void/. shellcheck is skipped with a note when it is missing (CI
// installs it); bash -n always runs.
func TestVoidScriptsLint(t *testing.T) {
	scripts, err := filepath.Glob("../../images/void/*.sh")
	if err != nil || len(scripts) == 0 {
		t.Fatalf("no scripts found under images/void: %v", err)
	}
	for _, s := range scripts {
		t.Run(filepath.Base(s), func(t *testing.T) {
			if out, err := exec.Command("bash", "-n", s).CombinedOutput(); err != nil {
				t.Fatalf("bash -n %s: %v\n%s", s, err, out)
			}
			if _, err := exec.LookPath("shellcheck"); err != nil {
				t.Skip("shellcheck is not installed (apt-get install shellcheck); bash -n passed")
			}
			if out, err := exec.Command("shellcheck", "-x", s).CombinedOutput(); err != nil {
				t.Fatalf("shellcheck %s: %v\n%s", s, err, out)
			}
		})
	}
}

// TestRunScriptStagesAndTail runs a stand-in build script: its "==> "
// stages reach out with their time, every line reaches the log, and a
// failure names the script, the exit status and its last five lines.
func TestRunScriptStagesAndTail(t *testing.T) {
	script := `echo "==> fetching"; i=1; while [ $i -le 8 ]; do echo "pkg $i"; i=$((i+1)); done; echo "==> packing"; echo "no space" >&2; exit 2`
	var out, log strings.Builder
	err := runScript(context.Background(), "sh", []string{"-c", script}, time.Now(), &out, &log)
	want := "running " + VoidScript + ": exit status 2: pkg 6 | pkg 7 | pkg 8 | ==> packing | no space"
	if err == nil || err.Error() != want {
		t.Fatalf("runScript = %v\nwant %s", err, want)
	}
	if o := out.String(); strings.Count(o, "s  ") != 2 || !strings.Contains(o, "s  fetching\n") || !strings.HasSuffix(o, "s  packing\n") {
		t.Errorf("stage output %q", o)
	}
	if l := log.String(); strings.Count(l, "\n") != 11 || !strings.HasPrefix(l, "==> fetching\npkg 1\n") {
		t.Errorf("log %q", l)
	}
	if err := runScript(context.Background(), "true", nil, time.Now(), nil, nil); err != nil {
		t.Errorf("a script that succeeds: %v", err)
	}
}
