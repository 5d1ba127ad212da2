//go:build system

package test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// runBin runs a banger binary with no daemon state of its own and returns
// stdout, stderr and the exit code.
func runBin(t *testing.T, bin string, args ...string) (string, string, int) {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command(bin, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "BANGER_STATE_DIR=" + filepath.Join(dir, "s"),
		"XDG_RUNTIME_DIR=" + filepath.Join(dir, "r"), "BANGER_CONFIG=" + filepath.Join(dir, "none.toml")}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil && exitCode(err) < 0 {
		t.Fatalf("running %s %v: %v", bin, args, err)
	}
	return out.String(), errb.String(), exitCode(err)
}

// The front `banger` hands what it does not have to banger-full next to
// it, and the user sees the complete CLI: the same help, completion and
// exit codes as banger-full run directly, also through a symlink to the
// front elsewhere.
func TestCLIFrontHandsOffToFull(t *testing.T) {
	bins := buildBinaries(t)
	full := filepath.Join(bins.dir, "banger-full")
	link := filepath.Join(t.TempDir(), "banger")
	if err := os.Symlink(bins.banger, link); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"--help"}, {"help", "vm"}, {"vm"}, {"vm", "exec", "--help"}, {"__complete", ""}, {"__complete", "vm", ""},
		{"__complete", "image", "build", ""}, {"completion", "bash"}, {"vm", "frobnicate"}, {"imgae", "list"},
		{"internal"}, {"image", "build", "debian", "--bogus"}, {"tui"}, {"--version"}, {"vm", "list", "--bogus"},
	} {
		wantOut, wantErr, wantCode := runBin(t, full, args...)
		for _, front := range []string{bins.banger, link} {
			out, errOut, code := runBin(t, front, args...)
			if out != wantOut || errOut != wantErr || code != wantCode {
				t.Errorf("%s %q: exit %d\nstdout %q\nstderr %q\nbanger-full: exit %d\nstdout %q\nstderr %q",
					front, args, code, out, errOut, wantCode, wantOut, wantErr)
			}
		}
	}
	out, _, _ := runBin(t, bins.banger, "__complete", "")
	for _, name := range []string{"tui", "doctor", "runtime", "dns", "vm", "image", "version", "completion"} {
		if !strings.Contains(out, "\n"+name+"\t") && !strings.HasPrefix(out, name+"\t") {
			t.Errorf("completion of the top level lacks %q:\n%s", name, out)
		}
	}
}

// Without banger-full beside it, the front still runs its own commands and
// says in one line, exit 1, which file the others need.
func TestCLIFrontWithoutFull(t *testing.T) {
	bins := buildBinaries(t)
	dir := t.TempDir()
	front := filepath.Join(dir, "banger")
	b, err := os.ReadFile(bins.banger)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(front, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, errOut, code := runBin(t, front, "version"); code != 0 || !strings.HasPrefix(out, "banger ") {
		t.Errorf("version without banger-full: exit %d, %q %q", code, out, errOut)
	}
	for _, args := range [][]string{{"tui"}, {"--help"}, {"vm", "exec", "dev", "--", "true"}} {
		out, errOut, code := runBin(t, front, args...)
		want := "banger: `banger " + strings.Join(args, " ") + "` runs in banger-full, which could not be started (" + filepath.Join(dir, "banger-full") + ": no such file or directory); reinstall banger with `make install`\n"
		if code != 1 || out != "" || errOut != want {
			t.Errorf("%q without banger-full: exit %d, stdout %q, stderr %q; want exit 1 and %q", args, code, out, errOut, want)
		}
	}
}
