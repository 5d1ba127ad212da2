//go:build !banger_front

package cli

import (
	"strings"
	"testing"
)

// TestVMExecOwnFailuresExit125: every failure of banger's own in `vm exec`
// (usage, flags, no daemon) exits 125, one line, so it cannot be mistaken
// for the command's exit code.
func TestVMExecOwnFailuresExit125(t *testing.T) {
	env := envWithConfig(t, "")
	for _, tt := range []struct {
		args []string
		msg  string
	}{
		{[]string{"vm", "exec"}, "needs a VM name"},
		{[]string{"vm", "exec", "dev"}, "needs a command"},
		{[]string{"vm", "exec", "dev", "--"}, "needs a command"},
		{[]string{"vm", "exec", "dev", "other", "--", "true"}, "takes one VM"},
		{[]string{"vm", "exec", "--bogus", "dev", "--", "true"}, "unknown flag"},
		{[]string{"vm", "exec", "--env", "NOEQUALS", "dev", "--", "true"}, "KEY=VALUE"},
		{[]string{"vm", "exec", "dev", "--", "true"}, "bangerd not found"}, // after the "starting it" line
	} {
		_, errOut, code := runCLI(t, env, tt.args...)
		lines := strings.Split(strings.TrimSpace(errOut), "\n")
		if code != ExitExecFailed || !strings.Contains(lines[len(lines)-1], tt.msg) || (len(lines) > 1 && !strings.Contains(lines[0], "starting it")) {
			t.Errorf("%q: exit %d stderr %q; want %d and one line containing %q", tt.args, code, errOut, ExitExecFailed, tt.msg)
		}
	}
	// Other commands keep their codes.
	if _, _, code := runCLI(t, env, "vm", "list", "--bogus"); code != ExitUsage {
		t.Errorf("vm list --bogus: exit %d, want %d", code, ExitUsage)
	}
}
