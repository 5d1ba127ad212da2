//go:build !banger_front

package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/client"
	"banger/internal/firecracker"
	"banger/internal/forward"
)

// forwardPoll is how often `vm forward` checks that the VM still runs.
const forwardPoll = time.Second

// forwardTouchEvery is how often open connections count as use of the VM.
const forwardTouchEvery = time.Minute

// portSpec is one [HOST_ADDR:]HOST_PORT:GUEST_PORT argument.
type portSpec struct {
	hostAddr  netip.Addr // 127.0.0.1 unless named
	hostPort  uint16     // 0: pick a free one
	guestPort uint16
}

func (p portSpec) listenAddr() string {
	return netip.AddrPortFrom(p.hostAddr, p.hostPort).String()
}

const portSpecForm = "[HOST_ADDR:]HOST_PORT:GUEST_PORT, e.g. 8080:80 or 0.0.0.0:8080:80"

// parsePortSpec reads one forward argument. The host address is an IP
// literal (IPv6 in brackets); none means 127.0.0.1.
func parsePortSpec(s string) (portSpec, error) {
	bad := func(why string) (portSpec, error) {
		return portSpec{}, usageErrorf("port forward %q: %s; use %s", s, why, portSpecForm)
	}
	rest, guest, ok := cutLast(s, ":")
	if !ok {
		return bad("no guest port")
	}
	spec := portSpec{hostAddr: netip.AddrFrom4([4]byte{127, 0, 0, 1})}
	host := rest
	if addr, port, ok := cutLast(rest, ":"); ok {
		a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(addr, "["), "]"))
		if err != nil || a.Zone() != "" || (a.Is6() && !strings.HasPrefix(addr, "[")) {
			return bad(fmt.Sprintf("host address %q is not an IP address (IPv6 goes in brackets)", addr))
		}
		spec.hostAddr, host = a.Unmap(), port
	}
	hp, err := parsePort(host)
	if err != nil {
		return bad("host port " + err.Error())
	}
	gp, err := parsePort(guest)
	if err != nil {
		return bad("guest port " + err.Error())
	}
	if gp == 0 {
		return bad("guest port 0 is not a port")
	}
	spec.hostPort, spec.guestPort = hp, gp
	return spec, nil
}

func cutLast(s, sep string) (string, string, bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return "", s, false
	}
	return s[:i], s[i+len(sep):], true
}

func parsePort(s string) (uint16, error) {
	if s == "" {
		return 0, errors.New("is missing")
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a number", s)
	}
	if n > 65535 {
		return 0, fmt.Errorf("%d is out of range (0-65535)", n)
	}
	return uint16(n), nil
}

// parsePortSpecs reads every argument; a host port given twice is refused.
func parsePortSpecs(args []string) ([]portSpec, error) {
	seen := map[uint16]string{}
	var specs []portSpec
	for _, a := range args {
		p, err := parsePortSpec(a)
		if err != nil {
			return nil, err
		}
		if p.hostPort != 0 {
			if prev, dup := seen[p.hostPort]; dup {
				return nil, usageErrorf("port forwards %q and %q both use host port %d; give each forward its own host port", prev, a, p.hostPort)
			}
			seen[p.hostPort] = a
		}
		specs = append(specs, p)
	}
	return specs, nil
}

// agentTooOld is the daemon's refusal wording (internal/daemon oldAgentMessage).
func agentTooOld(image, feature string) string {
	return fmt.Sprintf("the agent in image %s is older than this banger (it has no %s); rebuild the image with `banger image build debian --name %s` (delete the old one first) and re-create the VM", image, feature, image)
}

func (a *app) vmForwardCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "forward VM [HOST_ADDR:]HOST_PORT:GUEST_PORT...",
		Short: "Forward host ports to guest ports until Ctrl-C",
		Long: `Listens on HOST_ADDR:HOST_PORT (127.0.0.1 unless you name an address) and tunnels each
connection over vsock to the guest agent, which connects to the guest's 127.0.0.1:GUEST_PORT
(or ::1, or the address the port is bound to). No guest network is needed. HOST_PORT 0 picks a
free port; each forward is printed as it starts. Runs in the foreground until Ctrl-C or SIGTERM,
or until the VM stops.`,
		Example: `  banger vm forward dev 8080:80
  banger vm forward dev 0:5432 3000:3000
  banger vm forward dev 0.0.0.0:8080:80`,
		Args: func(c *cobra.Command, args []string) error {
			switch len(args) {
			case 0:
				return usageErrorf("vm forward needs a VM and at least one port: banger vm forward VM %s", portSpecForm)
			case 1:
				return usageErrorf("vm forward needs at least one port after the VM: banger vm forward %s 8080:80 (%s)", args[0], portSpecForm)
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			specs, err := parsePortSpecs(args[1:])
			if err != nil {
				return err
			}
			return a.runForward(c.Context(), args[0], specs)
		},
	}
}

func (a *app) runForward(ctx context.Context, ref string, specs []portSpec) error {
	cl, err := a.client(ctx)
	if err != nil {
		return err
	}
	var target api.ExecTarget
	if err := cl.Call(ctx, api.MethodVMExec, api.VMRef{Ref: ref}, &target); err != nil {
		return err
	}
	name := target.VM.Name
	if target.Protocol < agent.ProtocolPorts {
		return &exitError{code: ExitFailed, msg: agentTooOld(target.VM.Image, "port forwarding")}
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(&lineHandler{mu: &sync.Mutex{}, w: a.stderr})

	var fws []*forward.Forward
	defer func() {
		for _, f := range fws {
			f.Close()
		}
	}()
	for _, s := range specs {
		guest := s.guestPort
		dial := func(ctx context.Context) (net.Conn, error) {
			conn, err := firecracker.DialVsock(ctx, target.VsockPath, target.AgentPort)
			if err != nil {
				return nil, fmt.Errorf("reaching the agent in vm %s: %w", name, err)
			}
			return agent.DialGuestPort(ctx, conn, guest)
		}
		label := fmt.Sprintf("%s:%d", name, guest)
		f, err := forward.Listen(ctx, s.listenAddr(), dial, log.With("forward", label))
		if err != nil {
			if errors.Is(err, syscall.EADDRINUSE) {
				return &exitError{code: ExitFailed, msg: fmt.Sprintf("host port %s is taken; pick another or use 0 for a free one", s.listenAddr())}
			}
			return &exitError{code: ExitFailed, msg: fmt.Sprintf("forwarding to %s: %s", label, errMessage(err))}
		}
		fws = append(fws, f)
		fmt.Fprintf(a.stdout, "forwarding %s → %s\n", f.Addr(), label)
	}
	if err := a.watchForwardedVM(ctx, cl, target, fws); err != nil {
		return err
	}
	return nil
}

// watchForwardedVM returns nil at Ctrl-C/SIGTERM and an error once the VM
// stops (the daemon says so, or its Firecracker's vsock socket is gone).
// Open connections count as use of the VM.
func (a *app) watchForwardedVM(ctx context.Context, cl *client.Client, target api.ExecTarget, fws []*forward.Forward) error {
	tick := time.NewTicker(forwardPoll)
	defer tick.Stop()
	var lastTouch time.Time
	stopped := func(why string) error {
		return &exitError{code: ExitFailed, msg: fmt.Sprintf("vm %s %s; forwarding stopped", target.VM.Name, why)}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		var vm api.VM
		err := cl.Call(cctx, api.MethodVMGet, api.VMRef{Ref: target.VM.ID}, &vm)
		cancel()
		var re *api.Error
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.As(err, &re) && re.Data.Kind == api.KindNotFound:
			return stopped("was deleted")
		case err == nil:
			switch vm.State {
			case api.StateStopping, api.StateStopped, api.StateError, api.StateCreated:
				return stopped("is " + vm.State)
			}
		default:
			// No daemon to ask: the VM's Firecracker is gone when its vsock
			// socket refuses connections.
			if c, err := net.DialTimeout("unix", target.VsockPath, 2*time.Second); err != nil {
				if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT) {
					return stopped("stopped")
				}
			} else {
				c.Close()
			}
		}
		active := 0
		for _, f := range fws {
			active += f.Conns()
		}
		if active > 0 && time.Since(lastTouch) >= forwardTouchEvery {
			lastTouch = time.Now()
			tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_ = cl.Call(tctx, api.MethodVMTouch, api.VMRef{Ref: target.VM.ID}, &api.VM{})
			cancel()
		}
	}
}

// lineHandler writes forward log records as one plain line each:
// "banger: forward dev:80: <msg>: <err>".
type lineHandler struct {
	mu    *sync.Mutex
	w     io.Writer
	attrs []slog.Attr
}

func (h *lineHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }

func (h *lineHandler) Handle(_ context.Context, r slog.Record) error {
	var label, errText string
	var rest []string
	add := func(at slog.Attr) bool {
		switch at.Key {
		case "forward":
			label = at.Value.String()
		case "err":
			errText = at.Value.String()
		case "listen":
		default:
			rest = append(rest, at.Key+"="+at.Value.String())
		}
		return true
	}
	for _, at := range h.attrs {
		add(at)
	}
	r.Attrs(add)
	msg := strings.TrimPrefix(r.Message, "forward: ")
	line := "banger: forward " + label + ": " + msg
	if len(rest) > 0 {
		line += " (" + strings.Join(rest, ", ") + ")"
	}
	if errText != "" {
		line += ": " + errText
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := fmt.Fprintln(h.w, line)
	return err
}

func (h *lineHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &lineHandler{mu: h.mu, w: h.w, attrs: append(append([]slog.Attr{}, h.attrs...), as...)}
}

func (h *lineHandler) WithGroup(string) slog.Handler { return h }
