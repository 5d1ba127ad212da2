package cli

import (
	"strings"

	"github.com/spf13/cobra"
)

// examples for commands defined without one, by command path.
var extraExamples = map[string]string{
	"banger":                 "  banger vm create dev && banger vm ssh dev\n  banger tui",
	"banger vm":              "  banger vm create dev\n  banger vm list\n  banger vm stop dev",
	"banger image":           "  banger image list\n  banger image register mydebian --rootfs ./rootfs.ext4",
	"banger daemon":          "  banger daemon status\n  banger daemon install",
	"banger daemon start":    "  banger daemon start",
	"banger daemon stop":     "  banger daemon stop   # VMs keep running",
	"banger config":          "  banger config show",
	"banger version":         "  banger version",
	"banger runtime":         "  banger runtime show",
	"banger image build":     "  banger image build debian\n  banger image build void",
	"banger help":            "  banger help vm create",
	"banger completion bash": "  banger completion bash > ~/.local/share/bash-completion/completions/banger",
}

// vmCommandsTakingMany are `vm` subcommands whose arguments are VMs; the
// others (show, logs, ssh) take one.
func takesVMs(c *cobra.Command) (bool, bool) {
	use := c.Use
	if !strings.Contains(use, "VM") {
		return false, false
	}
	return true, strings.Contains(use, "VM...")
}

// walkTree walks the whole command tree to add dynamic completion, live
// progress on `vm start`/`vm restart`, and examples where a command has none.
func (a *app) walkTree(root *cobra.Command) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Example == "" {
			c.Example = extraExamples[c.CommandPath()]
		}
		if p := c.Parent(); p != nil && p.Name() == "vm" && c.ValidArgsFunction == nil {
			if ok, many := takesVMs(c); ok {
				c.ValidArgsFunction = a.completeVMs(many)
			}
		}
		if p := c.Parent(); p != nil && p.Name() == "image" && c.Name() == "delete" && c.ValidArgsFunction == nil {
			c.ValidArgsFunction = a.completeImages
		}
		if c.Flags().Lookup("image") != nil {
			_ = c.RegisterFlagCompletionFunc("image", a.completeImages)
		}
		if p := c.Parent(); p != nil && p.Name() == "vm" && (c.Name() == "start" || c.Name() == "restart") {
			a.addStartProgress(c)
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}

// addStartProgress wraps `vm start`/`vm restart` so they print boot stages
// as they happen (nothing with --quiet or --json).
func (a *app) addStartProgress(c *cobra.Command) {
	run := c.RunE
	if run == nil {
		return
	}
	var quiet bool
	if c.Flags().Lookup("quiet") == nil {
		c.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only the result, no progress")
	}
	c.RunE = func(cmd *cobra.Command, args []string) error {
		jsonOut, _ := cmd.Flags().GetBool("json")
		q, _ := cmd.Flags().GetBool("quiet")
		if q || jsonOut || len(args) == 0 {
			return run(cmd, args)
		}
		cl, err := a.client(cmd.Context())
		if err != nil {
			return err
		}
		ctx, calls := withProgressCalls(cmd.Context())
		cmd.SetContext(ctx)
		stop := a.startProgress(ctx, cl, false, args)
		defer func() { stop(calls.wait()) }()
		return run(cmd, args)
	}
}
