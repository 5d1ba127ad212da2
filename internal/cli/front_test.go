//go:build banger_front

package cli

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// TestFrontHandOff: the front runs the leaves it has and hands everything
// else (groups, help, completion, the complete binary's own commands,
// unknown words) to banger-full next to its executable, with the same
// arguments; when that exec fails it says which file, exit 1.
func TestFrontHandOff(t *testing.T) {
	var gotPath string
	var gotArgv []string
	exec := func(path string, argv, _ []string) error {
		gotPath, gotArgv = path, argv
		return syscall.ENOENT
	}
	self, _ := os.Executable()
	if r, err := filepath.EvalSymlinks(self); err == nil {
		self = r
	}
	wantPath := filepath.Join(filepath.Dir(self), FullBinary)

	handed := [][]string{
		{}, {"--version"}, {"help"}, {"help", "vm"}, {"vm"}, {"vm", "--help"}, {"vm", "list", "-h"},
		{"__complete", "vm", ""}, {"completion", "bash"}, {"tui"}, {"doctor"}, {"internal", "nat-add"},
		{"runtime", "show"}, {"image", "build", "debian"}, {"image", "verify", "x"}, {"dns", "setup"},
		{"daemon", "install"}, {"vm", "exec", "dev", "--", "ls"}, {"vm", "cp", "a", "dev:/b"},
		{"vm", "forward", "dev", "8080"}, {"vm", "frobnicate"}, {"imgae", "list"}, {"daemon"},
	}
	for _, args := range handed {
		gotPath, gotArgv = "", nil
		a, _, errb := testApp(nil)
		a.exec = exec
		code := a.run(context.Background(), args)
		if gotPath != wantPath || !slices.Equal(gotArgv, append([]string{os.Args[0]}, args...)) {
			t.Errorf("%q: exec %q %q, want %q with the same arguments", args, gotPath, gotArgv, wantPath)
		}
		if code != ExitFailed || !strings.Contains(errb.String(), wantPath+": no such file or directory") {
			t.Errorf("%q: exit %d, stderr %q; want 1 and the missing file named", args, code, errb.String())
		}
	}

	// The front's own leaves never exec. A flag error in one stays the
	// front's (the complete binary has the same command and would say the
	// same).
	for _, args := range [][]string{
		{"version"}, {"vms", "ls", "--bogus"}, {"vm", "list", "--bogus"}, {"image", "list", "--bogus"},
		{"daemon", "status", "--bogus"}, {"vm", "ssh"}, {"config", "show", "--bogus"}, {"vm", "rm"},
	} {
		gotPath = ""
		a, out, errb := testApp(nil)
		a.exec = exec
		code := a.run(context.Background(), args)
		if gotPath != "" {
			t.Errorf("%q: handed to %s; the front has this command", args, gotPath)
		}
		if args[0] == "version" {
			if code != ExitOK || !strings.HasPrefix(out.String(), "banger test\n") {
				t.Errorf("version: exit %d, %q", code, out.String())
			}
		} else if code != ExitUsage {
			t.Errorf("%q: exit %d (%s), want 2", args, code, errb.String())
		}
	}
}
