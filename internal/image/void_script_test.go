package image

import (
	"os/exec"
	"path/filepath"
	"testing"
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
