package cli

import "github.com/spf13/cobra"

// addSSHCommands registers `vm ssh` and `ssh-config`.
func (a *app) addSSHCommands(root *cobra.Command) {}
