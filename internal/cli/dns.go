//go:build !banger_front

package cli

import (
	"context"
	"net"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/client"
	"banger/internal/config"
	"banger/internal/hostops"
	"banger/internal/preflight"
)

// addDNSCommands registers `dns setup`.
func (a *app) addDNSCommands(root *cobra.Command) {
	if !a.wants("dns") {
		return
	}
	dns := &cobra.Command{
		Use:     "dns",
		Short:   "Make NAME.vm resolve on the host",
		Example: "  banger dns setup\n  banger dns setup --apply",
		Args:    cobra.NoArgs,
	}
	var apply, revert bool
	var resolver string
	setup := &cobra.Command{
		Use:   "setup",
		Short: "Print (or --apply, --revert) the host resolver steps for NAME.vm",
		Long: `bangerd answers for the zone vm. on dns_listen_addr (default 127.0.0.1:42069) and on the
bridge address with the same port. dns setup points the host's resolver at it.

With systemd-resolved (resolvectl on PATH and /run/systemd/resolve present) the bridge link gets
banger's server and the routing domain ~vm. resolved forgets per-link settings when a link goes
away, so once applied, bangerd re-applies them whenever it re-creates the bridge. Otherwise a
dnsmasq drop-in forwards vm. to banger (NetworkManager's dnsmasq directory when NetworkManager runs
dnsmasq). Without --apply nothing changes: the steps are printed. --apply and --revert go through
the privileged helper and record what was done in the state directory (dns-setup.json).`,
		Example: `  banger dns setup
  banger dns setup --apply
  banger dns setup --revert
  banger dns setup --resolver dnsmasq`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if apply && revert {
				return usageErrorf("--apply and --revert exclude each other")
			}
			switch resolver {
			case "auto", hostops.ResolverResolved, hostops.ResolverDnsmasq:
			default:
				return usageErrorf("--resolver %q: want auto, %s or %s", resolver, hostops.ResolverResolved, hostops.ResolverDnsmasq)
			}
			l, err := a.config()
			if err != nil {
				return err
			}
			s := &dnsSetup{
				cfg:          l.Config,
				stateDir:     l.Paths.StateDir,
				out:          a.stdout,
				host:         hostops.New(hostops.Options{Roots: []string{l.Paths.StateDir, l.Paths.DataDir}, HelperPath: l.Config.HelperPath}),
				detect:       hostops.DetectResolver,
				bridgeExists: linkExists,
				forced:       resolver,
				problem:      dnsProblem(c.Context(), l),
			}
			switch {
			case apply:
				return s.apply(c.Context())
			case revert:
				return s.revert(c.Context())
			}
			return s.print()
		},
	}
	setup.Flags().BoolVar(&apply, "apply", false, "perform the steps (through the privileged helper) and record them")
	setup.Flags().BoolVar(&revert, "revert", false, "undo what --apply did")
	setup.Flags().StringVar(&resolver, "resolver", "auto", "host resolver: auto, resolved or dnsmasq")
	dns.AddCommand(setup)
	root.AddCommand(dns)
}

// dnsProblem asks a running bangerd whether it serves dns_listen_addr;
// without one it tries the port, which bangerd will need.
func dnsProblem(ctx context.Context, l *config.Loaded) string {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if st, err := client.New(l.Paths.Socket).Ping(ctx); err == nil {
		return st.DNSProblem
	}
	addr := l.Config.DNSListenAddr.String()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return preflight.DNSProblem(addr, err)
	}
	pc.Close()
	return ""
}

func linkExists(name string) bool {
	_, err := net.InterfaceByName(name)
	return err == nil
}
