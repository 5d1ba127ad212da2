//go:build !banger_front

package cli

import (
	"os"
	"os/exec"

	tea "charm.land/bubbletea/v2"
	"github.com/spf13/cobra"

	"banger/internal/tui"
)

func (a *app) tuiCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "tui",
		Short: "Watch and drive your VMs in a terminal UI",
		Long: `A live table of VMs (state, health, address, CPU and memory use) updated from the
daemon's event stream, with a detail pane and keys for start, stop, restart, kill,
delete, NAT, ssh and create. Set NO_COLOR for plain output.`,
		Example: "  banger tui\n  NO_COLOR=1 banger tui",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if !a.isTerminal(os.Stdout) {
				return usageErrorf("banger tui needs a terminal; use `banger vm list` in scripts")
			}
			cl, err := a.client(c.Context())
			if err != nil {
				return err
			}
			self, err := os.Executable()
			if err != nil {
				return failf("finding the banger executable for ssh: %v", err)
			}
			opts := tui.Options{
				NoColor: a.getenv("NO_COLOR") != "",
				SSH: func(name string, done func(error) tea.Msg) tea.Cmd {
					return tea.ExecProcess(exec.Command(self, "vm", "ssh", name), func(err error) tea.Msg { return done(err) })
				},
			}
			return tui.Run(c.Context(), tui.FromClient(cl), opts)
		},
	}
}

func (a *app) completionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "completion bash|zsh|fish",
		Short: "Print a shell completion script (VM and image names complete from the running daemon)",
		Example: `  banger completion bash > ~/.local/share/bash-completion/completions/banger
  banger completion zsh > "${fpath[1]}/_banger"
  banger completion fish > ~/.config/fish/completions/banger.fish`,
		ValidArgs: []string{"bash", "zsh", "fish"},
		Args:      cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			root := c.Root()
			switch args[0] {
			case "bash":
				return root.GenBashCompletionV2(a.stdout, true)
			case "zsh":
				return root.GenZshCompletion(a.stdout)
			case "fish":
				return root.GenFishCompletion(a.stdout, true)
			}
			return usageErrorf("no completion for shell %q; use bash, zsh or fish", args[0])
		},
	}
}
