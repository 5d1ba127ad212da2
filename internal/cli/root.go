// Package cli is the banger command line: cobra commands, one file per verb,
// human tables and --json.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/client"
	"banger/internal/config"
)

// BuildInfo identifies the binary.
type BuildInfo struct {
	Version string
	Commit  string
	Date    string
}

// Exit codes.
const (
	ExitOK        = 0
	ExitFailed    = 1
	ExitUsage     = 2
	ExitNoDaemon  = 3
	exitCodeUnset = -1
)

// Exit codes of `vm exec` for banger's own failures, as docker's: they are
// never the command's, which exits with whatever it exits with.
const (
	ExitExecFailed   = 125 // banger could not run the command (daemon, VM, agent, usage)
	ExitExecCannot   = 126 // the command was found but cannot be run
	ExitExecNotFound = 127 // the command was not found in the guest
)

// isExecCommand reports whether args run `banger vm exec`, whose failures
// of banger's own exit 125 instead of 1 or 2.
func isExecCommand(root *cobra.Command, args []string) bool {
	c, _, err := root.Find(args)
	return err == nil && c.Name() == "exec" && c.Parent() != nil && c.Parent().Name() == "vm"
}

// exitError carries an exit code and a one-line message. A bare message
// already starts with the command ("banger vm logs: needs a VM name") and is
// printed without the "banger: " prefix.
type exitError struct {
	code int
	msg  string
	bare bool
}

func (e *exitError) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error {
	return &exitError{code: ExitUsage, msg: fmt.Sprintf(format, args...)}
}

func bareUsagef(format string, args ...any) error {
	return &exitError{code: ExitUsage, msg: fmt.Sprintf(format, args...), bare: true}
}

func failf(format string, args ...any) error {
	return &exitError{code: ExitFailed, msg: fmt.Sprintf(format, args...)}
}

// silentExit ends with a code after output was already printed.
type silentExit struct{ code int }

func (e *silentExit) Error() string { return fmt.Sprintf("exit %d", e.code) }

// app is the state shared by commands of one invocation.
type app struct {
	build  BuildInfo
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string
	loaded *config.Loaded
	cl     *client.Client
	// only, when set, is the one top-level command the arguments name: the
	// tree is built with just that subtree (see rootCmdFor).
	only string

	defaultsHelp []*cobra.Command // flags whose help shows configured defaults
	// exec replaces the process (the front's hand-off to banger-full);
	// nil is syscall.Exec.
	exec func(path string, argv, env []string) error
}

// Main runs the CLI and returns the exit code.
func Main(args []string, build BuildInfo) int {
	a := &app{build: build, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}
	return a.run(context.Background(), args)
}

func (a *app) run(ctx context.Context, args []string) int {
	root := a.rootCmdFor(args)
	if code, ok := a.handOff(root, args); ok {
		return code
	}
	if helpWanted(args) {
		for _, c := range a.defaultsHelp {
			a.applyDefaultsHelp(c)
		}
	}
	root.SetArgs(args)
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	code, msg := classify(err)
	var se *silentExit
	if !errors.As(err, &se) && code != ExitExecCannot && code != ExitExecNotFound && isExecCommand(root, args) {
		code = ExitExecFailed
	}
	var ee *exitError
	switch {
	case msg == "":
	case errors.As(err, &ee) && ee.bare:
		fmt.Fprintln(a.stderr, msg)
	default:
		fmt.Fprintf(a.stderr, "banger: %s\n", msg)
	}
	return code
}

// helpWanted reports whether args may print flag help (help, -h, --help,
// shell completion with flag descriptions).
func helpWanted(args []string) bool {
	for _, a := range args {
		switch a {
		case "-h", "--help", "help", cobra.ShellCompRequestCmd, cobra.ShellCompNoDescRequestCmd:
			return true
		}
	}
	return false
}

// classify maps an error to an exit code and a one-line message.
func classify(err error) (int, string) {
	var se *silentExit
	if errors.As(err, &se) {
		return se.code, ""
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code, oneLine(ee.msg)
	}
	var ce *config.Error
	if errors.As(err, &ce) {
		return ExitUsage, oneLine(ce.Error())
	}
	var re *api.Error
	if errors.As(err, &re) {
		if re.Data.Kind == api.KindInvalid {
			return ExitUsage, oneLine(re.Message)
		}
		return ExitFailed, oneLine(re.Message)
	}
	if errors.Is(err, client.ErrNoDaemon) {
		return ExitFailed, oneLine(err.Error())
	}
	msg := err.Error()
	// cobra's own flag and argument errors are usage errors.
	for _, p := range []string{"unknown flag", "unknown shorthand flag", "unknown command", "invalid argument", "flag needs an argument", "accepts ", "requires at least", "required flag"} {
		if strings.Contains(msg, p) {
			return ExitUsage, oneLine(msg)
		}
	}
	return ExitFailed, oneLine(msg)
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

// rootCmd builds the whole command tree.
func (a *app) rootCmd() *cobra.Command {
	a.only = ""
	return a.buildRoot()
}

// rootCmdFor builds the tree args need. A plain command line (`banger vm
// list`, `banger version`) only ever reaches the subtree of the top-level
// command it names, so only that one is built: building all ~50 commands
// with their flags was 110 KB of heap and a tenth of `banger version`'s
// instructions. Anything that may look at the rest of the tree (help,
// completion, a flag or an unknown word first) gets the whole tree.
func (a *app) rootCmdFor(args []string) *cobra.Command {
	top := ""
	if len(args) > 0 && !helpWanted(args) {
		top = args[0]
	}
	switch {
	case top == "", strings.HasPrefix(top, "-"), top == "help", top == "completion":
		return a.rootCmd()
	}
	a.only = top
	root := a.buildRoot()
	for _, c := range root.Commands() {
		if c.Name() == top || c.HasAlias(top) {
			return root
		}
	}
	return a.rootCmd() // an unknown command: its suggestions need every name
}

// wants reports whether the tree being built includes a top-level command
// with one of these names.
func (a *app) wants(names ...string) bool {
	return a.only == "" || slices.Contains(names, a.only)
}

func (a *app) buildRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "banger",
		Short:         "Firecracker microVMs as everyday development machines",
		Long:          "banger runs Firecracker microVMs as development machines: `banger vm create dev && banger vm ssh dev`.",
		SilenceUsage:  true,
		SilenceErrors: true,
		CompletionOptions: cobra.CompletionOptions{
			HiddenDefaultCmd: true,
		},
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageErrorf("%v (see `%s --help`)", err, c.CommandPath())
	})
	if a.wants("version") {
		root.AddCommand(a.versionCmd())
	}
	if a.wants("daemon") {
		root.AddCommand(a.daemonCmd())
	}
	if a.wants("config") {
		root.AddCommand(a.configCmd())
	}
	a.addVMCommands(root)
	a.addImageCommands(root)
	a.addSSHCommands(root)
	a.addFullCommands(root)
	a.walkTree(root)
	a.applyConventions(root)
	return root
}

// config loads the configuration once.
func (a *app) config() (*config.Loaded, error) {
	if a.loaded != nil {
		return a.loaded, nil
	}
	paths, err := config.DefaultPaths(a.getenv)
	if err != nil {
		return nil, err
	}
	l, err := config.Load(paths, a.getenv)
	if err != nil {
		return nil, err
	}
	for _, w := range l.Warnings {
		fmt.Fprintf(a.stderr, "banger: warning: %s\n", w)
	}
	a.loaded = l
	return l, nil
}

func (a *app) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print version, commit and build date",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			fmt.Fprintf(a.stdout, "banger %s\ncommit: %s\nbuilt:  %s\n", a.build.Version, a.build.Commit, a.build.Date)
			return nil
		},
	}
}
