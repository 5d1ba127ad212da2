package image

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// debianScripts are the shell scripts of the Debian image and the boot lane.
func debianScripts(t *testing.T) []string {
	t.Helper()
	repo, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	err = filepath.WalkDir(filepath.Join(repo, "images"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && filepath.Ext(p) == ".sh" {
			out = append(out, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"scripts/build-kernel.sh", "scripts/test-image.sh"} {
		out = append(out, filepath.Join(repo, s))
	}
	return out
}

func TestScriptsParse(t *testing.T) {
	for _, s := range debianScripts(t) {
		t.Run(filepath.Base(s), func(t *testing.T) {
			if out, err := exec.Command("bash", "-n", s).CombinedOutput(); err != nil {
				t.Errorf("bash -n %s: %v\n%s", s, err, out)
			}
		})
	}
}

func TestScriptsShellcheck(t *testing.T) {
	if _, err := exec.LookPath("shellcheck"); err != nil {
		t.Skip("shellcheck not installed (apt-get install shellcheck)")
	}
	for _, s := range debianScripts(t) {
		t.Run(filepath.Base(s), func(t *testing.T) {
			if out, err := exec.Command("shellcheck", "-x", s).CombinedOutput(); err != nil {
				t.Errorf("shellcheck %s: %v\n%s", s, err, out)
			}
		})
	}
}
