package cli

import "github.com/spf13/cobra"

// addRuntimeCommands registers `runtime install|show` and `image build|verify`.
func (a *app) addRuntimeCommands(root *cobra.Command) {}
