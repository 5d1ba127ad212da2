package cli

import "github.com/spf13/cobra"

// addDNSCommands registers `dns setup`.
func (a *app) addDNSCommands(root *cobra.Command) {}
