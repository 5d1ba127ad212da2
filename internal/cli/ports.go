package cli

import (
	"fmt"
	"net/netip"
	"strconv"

	"github.com/spf13/cobra"

	"banger/internal/api"
)

// vmPortsCmd is `banger vm ports VM`: the guest's listening TCP sockets and
// the forwards the daemon holds for them.
func (a *app) vmPortsCmd() *cobra.Command {
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   "ports VM",
		Short: "List a VM's listening TCP ports and the host forwards held for them",
		Example: `  banger vm ports dev
  banger vm ports dev --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			vm, err := a.oneVM(c.Context(), args[0])
			if err != nil {
				return err
			}
			cl, err := a.client(c.Context())
			if err != nil {
				return err
			}
			var res api.VMPorts
			if err := cl.Call(c.Context(), api.MethodVMPorts, api.VMRef{Ref: vm.ID}, &res); err != nil {
				return err
			}
			if jsonOut {
				return writeJSON(a.stdout, res)
			}
			a.printPorts(res)
			return nil
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	return cmd
}

// printPorts is one row per guest listener with the forwards to it, then
// the forwards to ports nothing listens on.
func (a *app) printPorts(res api.VMPorts) {
	if res.Note != "" {
		fmt.Fprintf(a.stderr, "banger: %s\n", res.Note)
	}
	t := newTable(a.stdout)
	t.row("GUEST", "PROTO", "FORWARD", "KIND", "CONNS", "NOTE")
	shown := map[int]bool{}
	for _, l := range res.Listeners {
		guest := joinAddrPort(l.Addr, l.Port)
		fs := forwardsTo(res.Forwards, l.Port)
		if shown[l.Port] {
			fs = nil // a port bound on v4 and v6: its forwards are on the first row
		}
		shown[l.Port] = true
		if len(fs) == 0 {
			note := ""
			switch {
			case l.Port == 22:
				note = "banger vm ssh " + res.VM
			case !reachable(l.Addr):
				note = "bound to one guest address; not forwarded"
			case !res.AutoForward:
				note = "auto_forward is off; see --publish"
			}
			t.row(guest, l.Proto, "-", "-", "-", note)
			continue
		}
		for _, f := range fs {
			t.row(guest, l.Proto, f.Host(), f.Kind, strconv.Itoa(f.Conns), forwardNote(f))
		}
	}
	for _, f := range res.Forwards {
		if !shown[f.GuestPort] {
			t.row(":"+strconv.Itoa(f.GuestPort), "-", f.Host(), f.Kind, strconv.Itoa(f.Conns), forwardNote(f))
		}
	}
	t.flush()
}

func forwardsTo(fs []api.Forward, port int) []api.Forward {
	var out []api.Forward
	for _, f := range fs {
		if f.GuestPort == port {
			out = append(out, f)
		}
	}
	return out
}

func forwardNote(f api.Forward) string {
	if f.Error != "" {
		return "not held: " + f.Error
	}
	return f.Note
}

// reachable reports whether the agent can reach a listener bound to addr
// through the guest's loopback.
func reachable(addr string) bool {
	a, err := netip.ParseAddr(addr)
	return err != nil || a.IsLoopback() || a.IsUnspecified()
}

func joinAddrPort(addr string, port int) string {
	if a, err := netip.ParseAddr(addr); err == nil {
		return netip.AddrPortFrom(a, uint16(port)).String()
	}
	return addr + ":" + strconv.Itoa(port)
}

// forwardLine is one forward for `vm show` and `vm create`:
// "127.0.0.1:8080 -> dev:80 (published)".
func forwardLine(vm string, f api.Forward) string {
	line := fmt.Sprintf("%s -> %s:%d (%s", f.Host(), vm, f.GuestPort, f.Kind)
	if n := forwardNote(f); n != "" {
		line += "; " + n
	}
	return line + ")"
}

// checkPublish validates --publish and --unpublish values before anything
// is sent.
func checkPublish(publish, unpublish []string) error {
	for _, s := range publish {
		if _, err := api.ParsePublish(s); err != nil {
			return usageErrorf("%v", err)
		}
	}
	for _, s := range unpublish {
		if _, _, err := api.ParseUnpublish(s); err != nil {
			return usageErrorf("%v", err)
		}
	}
	return nil
}

// printForwards prints the VM's published forwards, one line each.
func (a *app) printForwards(vm api.VM) {
	for _, f := range vm.Forwards {
		if f.Kind == api.ForwardPublished {
			fmt.Fprintln(a.stdout, "forward "+forwardLine(vm.Name, f))
		}
	}
}
