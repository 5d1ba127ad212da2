//go:build !banger_front

package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func TestEveryCommandHasAnExample(t *testing.T) {
	a, _, _ := testApp(envWithConfig(t, ""))
	var walk func(c *cobra.Command)
	var missing []string
	walk = func(c *cobra.Command) {
		if !c.Hidden && c.Name() != "help" && c.Example == "" {
			missing = append(missing, c.CommandPath())
		}
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(a.rootCmd())
	if len(missing) > 0 {
		t.Fatalf("commands without an example:\n%s", strings.Join(missing, "\n"))
	}
}

func TestVMCommandsCompleteNames(t *testing.T) {
	a, _, _ := testApp(envWithConfig(t, ""))
	root := a.rootCmd()
	for _, path := range [][]string{{"vm", "start"}, {"vm", "stop"}, {"vm", "restart"}, {"vm", "kill"}, {"vm", "delete"}, {"vm", "set"}, {"vm", "show"}, {"vm", "stats"}, {"vm", "health"}, {"vm", "logs"}, {"image", "delete"}} {
		c, _, err := root.Find(path)
		if err != nil {
			t.Fatalf("%v: %v", path, err)
		}
		if c.ValidArgsFunction == nil {
			t.Errorf("%s has no dynamic completion", c.CommandPath())
		}
	}
	if c, _, _ := root.Find([]string{"vm", "list"}); c.ValidArgsFunction != nil {
		t.Errorf("vm list takes no VMs but completes them")
	}
}

func TestCompletionNeverStartsADaemon(t *testing.T) {
	env := envWithConfig(t, "")
	out, errOut, code := runCLI(t, env, "__complete", "vm", "stop", "")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if strings.Contains(errOut, "starting") {
		t.Fatalf("completion tried to start bangerd: %s", errOut)
	}
	if got := strings.TrimSpace(out); got != ":4" {
		t.Fatalf("completion without a daemon = %q, want only the no-file directive", got)
	}
	if _, err := os.Stat(filepath.Join(env["XDG_RUNTIME_DIR"], "banger", "start.lock")); err == nil {
		t.Fatal("completion took the daemon start lock")
	}
}

func TestCompletionScripts(t *testing.T) {
	for _, sh := range []string{"bash", "zsh", "fish"} {
		out, errOut, code := runCLI(t, envWithConfig(t, ""), "completion", sh)
		if code != 0 || !strings.Contains(out, "banger") || !strings.Contains(out, "__complete") {
			t.Fatalf("completion %s: exit %d, stderr %q, %d bytes", sh, code, errOut, len(out))
		}
	}
	_, errOut, code := runCLI(t, envWithConfig(t, ""), "completion", "tcsh")
	if code != ExitUsage || !strings.Contains(errOut, "tcsh") {
		t.Fatalf("completion tcsh: exit %d, stderr %q", code, errOut)
	}
}
