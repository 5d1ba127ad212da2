package cli

import (
	"os"

	"github.com/spf13/cobra"

	"banger/internal/hostops"
)

// internalCmd is the hidden entry of the privileged helper: sudo runs
// `banger internal <op>` with JSON arguments on stdin.
func (a *app) internalCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "internal OP",
		Short:  "Run one privileged host operation (used through sudo by bangerd)",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			code := hostops.Serve(c.Context(), args[0], os.Stdin, a.stdout)
			if code != 0 {
				return &silentExit{code: code}
			}
			return nil
		},
	}
}
