package cli

import (
	"fmt"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// describeTree renders a command subtree: every command's use line, aliases,
// example, whether it runs, whether it completes, and its flags with their
// defaults.
func describeTree(c *cobra.Command) string {
	var b strings.Builder
	var walk func(c *cobra.Command, depth int)
	walk = func(c *cobra.Command, depth int) {
		fmt.Fprintf(&b, "%s%s aliases=%v example=%q run=%t complete=%t short=%q\n", strings.Repeat("  ", depth),
			c.Use, c.Aliases, c.Example, c.RunE != nil || c.Run != nil, c.ValidArgsFunction != nil, c.Short)
		c.Flags().VisitAll(func(f *pflag.Flag) {
			fmt.Fprintf(&b, "%s  --%s/-%s=%q\n", strings.Repeat("  ", depth), f.Name, f.Shorthand, f.DefValue)
		})
		for _, s := range c.Commands() {
			walk(s, depth+1)
		}
	}
	walk(c, 0)
	return b.String()
}

// The tree built for a command line that names one top-level command has
// that command exactly as the whole tree has it (its subcommands, flags,
// completion and wrapped run functions), for every top-level name and
// alias; anything else gets the whole tree.
func TestPartialTreeMatchesWholeTree(t *testing.T) {
	env := envWithConfig(t, "")
	a, _, _ := testApp(env)
	whole := a.rootCmd()
	for _, c := range whole.Commands() {
		for _, name := range append([]string{c.Name()}, c.Aliases...) {
			b, _, _ := testApp(env)
			part := b.rootCmdFor([]string{name, "x"})
			var got *cobra.Command
			for _, pc := range part.Commands() {
				if pc.Name() == c.Name() {
					got = pc
				}
			}
			if got == nil {
				t.Fatalf("%s: the tree for it has no %s", name, c.Name())
			}
			if d, w := describeTree(got), describeTree(c); d != w {
				t.Errorf("%s: partial tree differs:\n%s\nwant:\n%s", name, d, w)
			}
			if name != "completion" && len(part.Commands()) != 1 {
				t.Errorf("%s: built %d top-level commands, want 1", name, len(part.Commands()))
			}
		}
	}
	for _, args := range [][]string{{}, {"--version"}, {"vm", "--help"}, {"help", "vm"}, {"vmm", "list"}, {"completion", "bash"}, {cobra.ShellCompRequestCmd, "vm", ""}} {
		b, _, _ := testApp(env)
		if d, w := describeTree(b.rootCmdFor(args)), describeTree(whole); d != w {
			t.Errorf("%q: not the whole tree", args)
		}
	}
}
