//go:build !banger_front

package cli

import "github.com/spf13/cobra"

// This file and every other one tagged !banger_front are the complete CLI:
// banger-full, and what `go build ./cmd/banger` makes without tags. The
// commands registered here link the heavy packages (the TUI, x/crypto/ssh,
// nftables/netlink, image building, the privileged host operations); the
// front binary (front.go, -tags banger_front) leaves them out and hands
// them to banger-full.

// addFullCommands registers what only the complete binary has: `internal`,
// `doctor`, `runtime`, `image build|verify`, `tui`, `completion`, `dns`,
// `daemon install` and `vm exec|cp|forward`.
func (a *app) addFullCommands(root *cobra.Command) {
	if a.wants("internal") {
		root.AddCommand(a.internalCmd())
	}
	a.addDoctorCommand(root)
	a.addRuntimeCommands(root)
	if a.wants("tui") {
		root.AddCommand(a.tuiCmd())
	}
	if a.wants("completion") {
		root.AddCommand(a.completionCmd())
	}
	for _, c := range root.Commands() {
		switch c.Name() {
		case "daemon":
			c.AddCommand(a.daemonInstallCmd())
		case "vm":
			c.AddCommand(a.vmExecCmd(), a.vmCpCmd(), a.vmForwardCmd())
		}
	}
	a.addDNSCommands(root)
}

// handOff: the complete binary runs every command itself.
func (a *app) handOff(*cobra.Command, []string) (int, bool) { return 0, false }
