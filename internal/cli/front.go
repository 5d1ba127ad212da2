//go:build banger_front

package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

// FullBinary is the complete CLI the front binary hands commands to. It is
// looked for in one place only: next to the front's own executable
// (symlinks resolved), where `make build`, `make install` and setup.sh put
// both.
const FullBinary = "banger-full"

// addFullCommands: the front has none of the complete binary's own commands.
func (a *app) addFullCommands(*cobra.Command) {}

// handOff runs args in banger-full unless the front has the command itself:
// a leaf of its tree (vm list, version, daemon status, ...), named without
// help or completion, which need the whole tree. banger-full replaces this
// process (exec): same arguments, streams, signals and exit code, and no
// second process stays around. It returns only when the exec failed.
func (a *app) handOff(root *cobra.Command, args []string) (int, bool) {
	if len(args) > 0 && !helpWanted(args) {
		if c, _, err := root.Find(args); err == nil && c != root && !c.HasSubCommands() {
			return 0, false
		}
	}
	full, err := fullBinaryPath()
	if err == nil {
		exec := a.exec
		if exec == nil {
			exec = syscall.Exec
		}
		if err = exec(full, append([]string{os.Args[0]}, args...), os.Environ()); err != nil {
			err = fmt.Errorf("%s: %w", full, err)
		}
	}
	cmd := strings.TrimSpace("banger " + strings.Join(args, " "))
	fmt.Fprintf(a.stderr, "banger: `%s` runs in %s, which could not be started (%v); reinstall banger with `make install`\n", cmd, FullBinary, err)
	return ExitFailed, true
}

// fullBinaryPath is banger-full next to this executable.
func fullBinaryPath() (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("finding this executable: %w", err)
	}
	if r, err := filepath.EvalSymlinks(self); err == nil {
		self = r
	}
	return filepath.Join(filepath.Dir(self), FullBinary), nil
}
