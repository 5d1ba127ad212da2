//go:build !banger_front

package cli

import (
	"github.com/spf13/cobra"

	"banger/internal/hostops"
)

// internalCmd is the hidden entry of the privileged helper: sudo runs
// `banger internal <op>` with JSON arguments on stdin. It exits 0 when the
// op succeeded, 2 when it was refused or invalid, 1 for other failures;
// the JSON reply on stdout carries the kind and message either way.
func (a *app) internalCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "internal OP",
		Short:  "Run one privileged host operation (used through sudo by bangerd)",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			code := hostops.Serve(c.Context(), args[0], c.InOrStdin(), a.stdout)
			if code != 0 {
				return &silentExit{code: code}
			}
			return nil
		},
	}
}
