package cli

import "github.com/spf13/cobra"

// addTUICommands registers `tui`, `completion` and `daemon install`.
func (a *app) addTUICommands(root *cobra.Command) {}
