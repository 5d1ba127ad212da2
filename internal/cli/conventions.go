package cli

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"banger/internal/config"
)

// The conventions of docker, limactl and multipass that banger follows:
// an unknown subcommand is an error (exit 2) with a suggestion, not a help
// page and exit 0; argument-count errors say what the command needs; every
// validation error exits 2; `banger --version` works.

// applyConventions walks the finished command tree.
func (a *app) applyConventions(root *cobra.Command) {
	v := a.build.Version
	if v == "" {
		v = "dev"
	}
	root.Version = v
	root.SetVersionTemplate(fmt.Sprintf("banger %s (commit %s, built %s)\n", v, orUnknown(a.build.Commit), orUnknown(a.build.Date)))
	// Groups run (to refuse unknown subcommands) but are used as "banger vm
	// [command]": their usage leaves out the "banger vm [flags]" line.
	root.SetUsageTemplate(strings.Replace(root.UsageTemplate(), "Usage:{{if .Runnable}}", "Usage:{{if and .Runnable (not .HasAvailableSubCommands)}}", 1))
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.HasSubCommands() {
			c.SuggestionsMinimumDistance = 2
		}
		if c.HasSubCommands() && c.Run == nil && c.RunE == nil {
			c.Args = cobra.ArbitraryArgs
			c.RunE = groupRun
		} else {
			c.Args = explainArgs(c.Args)
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// groupRun runs a command group (`banger vm`): help without arguments, an
// unknown-command error with a suggestion otherwise.
func groupRun(c *cobra.Command, args []string) error {
	if len(args) == 0 {
		return c.Help()
	}
	return unknownCommand(c, args[0])
}

func unknownCommand(c *cobra.Command, name string) error {
	msg := fmt.Sprintf("unknown command %q for %q", name, c.CommandPath())
	if s := c.SuggestionsFor(name); len(s) > 0 {
		msg += fmt.Sprintf("; did you mean %q?", s[0])
	} else {
		msg += fmt.Sprintf("; see `%s --help` for its commands", c.CommandPath())
	}
	return usageErrorf("%s", msg)
}

// argSpec is what a command's Use line says about its positional argument.
type argSpec struct {
	token string // "VM", "NAME", "bash|zsh|fish", "" when none
	many  bool   // "VM..."
}

func specOf(c *cobra.Command) argSpec {
	fields := strings.Fields(c.Use)
	for i := 1; i < len(fields); i++ {
		f := strings.Trim(fields[i], "[]")
		if strings.HasPrefix(f, "-") {
			if !strings.HasSuffix(fields[i], "]") && i+1 < len(fields) && !strings.HasPrefix(fields[i+1], "-") && !strings.HasPrefix(fields[i+1], "[") {
				i++ // the flag's value placeholder
			}
			continue
		}
		return argSpec{token: strings.TrimSuffix(f, "..."), many: strings.HasSuffix(f, "...")}
	}
	return argSpec{}
}

// noun names the argument a command needs, for "needs ..." messages.
func (s argSpec) noun(c *cobra.Command) string {
	switch s.token {
	case "VM":
		return "a VM name"
	case "NAME":
		if p := c.Parent(); p != nil && p.Name() == "image" {
			return "an image name"
		}
		return "a name"
	case "OP":
		return "an operation name"
	case "":
		return "no arguments"
	}
	if strings.Contains(s.token, "|") {
		opts := strings.Split(s.token, "|")
		return "one of " + strings.Join(opts[:len(opts)-1], ", ") + " or " + opts[len(opts)-1]
	}
	return "an argument (" + s.token + ")"
}

// explainArgs wraps an Args validator: an empty name is refused, and
// cobra's count errors ("accepts 1 arg(s), received 0") become what the
// command needs ("banger vm logs: needs a VM name"). Validators that return
// banger's own errors keep them.
func explainArgs(orig cobra.PositionalArgs) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		spec := specOf(c)
		positional := args
		if n := c.ArgsLenAtDash(); n >= 0 {
			positional = args[:n]
		}
		if spec.token == "VM" || spec.token == "NAME" {
			if slices.ContainsFunc(positional, func(s string) bool { return strings.TrimSpace(s) == "" }) {
				what := strings.TrimPrefix(strings.TrimPrefix(spec.noun(c), "an "), "a ")
				return bareUsagef("%s: the %s is empty; give %s (see `%s --help`)", c.CommandPath(), what, spec.noun(c), c.CommandPath())
			}
		}
		if orig == nil {
			return nil
		}
		err := orig(c, args)
		if err == nil {
			return nil
		}
		var ee *exitError
		if errors.As(err, &ee) {
			return err
		}
		lo, hi := argRange(orig, c)
		noun := spec.noun(c)
		switch {
		case len(args) < lo && spec.many:
			return bareUsagef("%s: needs at least one %s (see `%s --help`)", c.CommandPath(), strings.TrimPrefix(noun, "a "), c.CommandPath())
		case len(args) < lo:
			return bareUsagef("%s: needs %s (see `%s --help`)", c.CommandPath(), noun, c.CommandPath())
		case hi == 0 && c.HasSubCommands():
			return unknownCommand(c, args[0])
		case hi == 0:
			return bareUsagef("%s: takes no arguments, got %q (see `%s --help`)", c.CommandPath(), strings.Join(args, " "), c.CommandPath())
		case hi >= 0 && len(args) > hi:
			return bareUsagef("%s: takes only %s, got %d: %s (see `%s --help`)", c.CommandPath(), noun, len(args), strings.Join(args, " "), c.CommandPath())
		}
		return usageErrorf("%s: %v (see `%s --help`)", c.CommandPath(), err, c.CommandPath())
	}
}

// argRange finds how many arguments a validator accepts by asking it:
// lo is the fewest, hi the most (-1: no limit seen up to 8).
func argRange(v cobra.PositionalArgs, c *cobra.Command) (lo, hi int) {
	lo, hi = -1, -1
	const probe = 8
	for n := 0; n <= probe; n++ {
		args := make([]string, n)
		for i := range args {
			args[i] = "x"
		}
		if v(c, args) == nil {
			if lo < 0 {
				lo = n
			}
			hi = n
		}
	}
	if hi == probe {
		hi = -1
	}
	if lo < 0 {
		lo = 0
	}
	return lo, hi
}

// parseMemoryMiB reads --memory: a plain number is MiB (as before); a size
// with a unit ("4G", "512M", "1.5GiB") is converted and must be whole MiB.
func parseMemoryMiB(s string) (int, error) {
	s = strings.TrimSpace(s)
	if n, err := strconv.Atoi(s); err == nil {
		if n < config.MinMemoryMiB {
			return 0, usageErrorf("--memory %d MiB is too small; use at least %d (or a size such as 2G)", n, config.MinMemoryMiB)
		}
		return n, nil
	}
	b, err := config.ParseSize(s)
	if err != nil {
		// "size "4X": unknown unit ..." reads "--memory "4X": unknown unit ...".
		msg, _ := strings.CutPrefix(err.Error(), fmt.Sprintf("size %q", s))
		return 0, usageErrorf("--memory %q%s", s, msg)
	}
	if b%config.MiB != 0 {
		return 0, usageErrorf("--memory %q is not a whole number of MiB; use e.g. %dM", s, (b+config.MiB-1)/config.MiB)
	}
	mib := b / config.MiB
	if mib < config.MinMemoryMiB {
		return 0, usageErrorf("--memory %s is too small; use at least %d MiB", s, config.MinMemoryMiB)
	}
	if mib > 1<<30 {
		return 0, usageErrorf("--memory %s is too large", s)
	}
	return int(mib), nil
}

// cpusAlias makes --cpus another name of --vcpu (as in docker and
// multipass).
func cpusAlias(f *pflag.FlagSet, name pflag.NormalizedName) pflag.NormalizedName {
	if name == "cpus" {
		return "vcpu"
	}
	return name
}

// addCPUsAlias puts the alias on cmd's flags and says so in --help.
func addCPUsAlias(cmd *cobra.Command) {
	cmd.Flags().SetNormalizeFunc(func(f *pflag.FlagSet, name string) pflag.NormalizedName {
		return cpusAlias(f, pflag.NormalizedName(name))
	})
	if fl := cmd.Flags().Lookup("vcpu"); fl != nil {
		if i := strings.Index(fl.Usage, " (default"); i >= 0 {
			fl.Usage = fl.Usage[:i] + "; also --cpus" + fl.Usage[i:]
		} else {
			fl.Usage += "; also --cpus"
		}
	}
}
