//go:build !banger_front

package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/charmbracelet/x/term"
	"github.com/spf13/cobra"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/firecracker"
)

// execFailf is a `vm exec` failure of banger's own.
func execFailf(format string, args ...any) error {
	return &exitError{code: ExitExecFailed, msg: fmt.Sprintf(format, args...)}
}

func (a *app) vmExecCmd() *cobra.Command {
	var (
		interactive, tty bool
		user, workdir    string
		env              []string
	)
	cmd := &cobra.Command{
		Use:   "exec VM [-i] [-t] [--user U] [--workdir D] [--env K=V]... -- CMD [ARG...]",
		Short: "Run one command in a running VM through its guest agent",
		Long: `Runs CMD in the VM through the guest agent over vsock (no SSH key, no guest network).
stdout and stderr stay separate; -i passes stdin (its EOF closes the command's stdin); -t runs
the command on a pty with window-size changes forwarded (with -it the host terminal goes raw,
so Ctrl-C is a key for the guest).
SIGINT, SIGTERM, SIGHUP and SIGQUIT reach the command's process group. The default user is
root and the default workdir the user's home (/root).

banger exits with the command's exit code (128+N when signal N killed it). Its own failures
use codes the command's cannot be mistaken for: 125 banger could not run the command (daemon,
VM not running, agent, usage), 126 the command cannot be run, 127 it was not found.`,
		Example: `  banger vm exec dev -- uname -a
  banger vm exec -i dev -- sh -c 'cat > /root/notes.txt' < notes.txt
  banger vm exec -it dev -- bash
  banger vm exec --user dev --workdir /tmp --env FOO=bar dev -- env`,
		Args: func(c *cobra.Command, args []string) error {
			n := c.ArgsLenAtDash()
			switch {
			case len(args) == 0 || n == 0:
				return execFailf("vm exec needs a VM name and a command: banger vm exec VM -- CMD [ARG...]")
			case n == -1 && len(args) == 1, n == len(args):
				return execFailf("vm exec needs a command after the VM: banger vm exec %s -- CMD [ARG...]", args[0])
			case n > 1:
				return execFailf("vm exec takes one VM; put the command after --: banger vm exec %s -- %s", args[0], strings.Join(args[1:], " "))
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			for _, kv := range env {
				if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
					return execFailf("--env %q: want KEY=VALUE", kv)
				}
			}
			req := agent.ExecRequest{Argv: args[1:], Env: env, User: user, Workdir: workdir, Stdin: interactive, TTY: tty}
			return a.runExec(c.Context(), args[0], req)
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&interactive, "interactive", "i", false, "pass stdin to the command")
	f.BoolVarP(&tty, "tty", "t", false, "run the command on a pty (with -i, the host terminal goes raw)")
	f.StringVarP(&user, "user", "u", "", "run as this guest user (name or uid; default root)")
	f.StringVarP(&workdir, "workdir", "w", "", "working directory in the guest (default the user's home)")
	f.StringArrayVarP(&env, "env", "e", nil, "set an environment variable KEY=VALUE (repeatable)")
	return cmd
}

func (a *app) runExec(ctx context.Context, ref string, req agent.ExecRequest) error {
	stdinFd := os.Stdin.Fd()
	// The terminal whose size the pty gets: stdin with -i (it goes raw),
	// else stdout when it is one.
	sizeFd := stdinFd
	if req.TTY {
		if req.Stdin && !term.IsTerminal(stdinFd) {
			return execFailf("vm exec -it needs a terminal on stdin; drop -t to pipe input")
		}
		if !req.Stdin {
			sizeFd = os.Stdout.Fd()
		}
		if w, h, err := term.GetSize(sizeFd); err == nil {
			req.Cols, req.Rows = uint16(w), uint16(h)
		}
		if req.Env == nil || !hasEnv(req.Env, "TERM") {
			if t := a.getenv("TERM"); t != "" {
				req.Env = append([]string{"TERM=" + t}, req.Env...)
			}
		}
	}
	cl, err := a.client(ctx)
	if err != nil {
		return execFailf("%s", errMessage(err))
	}
	var target api.ExecTarget
	if err := cl.Call(ctx, api.MethodVMExec, api.VMRef{Ref: ref}, &target); err != nil {
		return execFailf("%s", errMessage(err))
	}
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	conn, err := firecracker.DialVsock(dctx, target.VsockPath, target.AgentPort)
	cancel()
	if err != nil {
		return execFailf("reaching the agent in vm %s: %s", target.VM.Name, errMessage(err))
	}
	e, err := agent.StartExec(conn, req)
	if err != nil {
		var ee *agent.ExecError
		switch {
		case errors.As(err, &ee):
			return &exitError{code: ee.Code, msg: "vm exec: " + ee.Msg}
		case errors.Is(err, agent.ErrExecUnsupported):
			return execFailf("the agent in image %s is older than this banger; rebuild the image with `banger image build debian --name %s`", target.VM.Image, target.VM.Image)
		}
		return execFailf("starting the command in vm %s: %s", target.VM.Name, errMessage(err))
	}
	defer e.Close()

	sigs := make(chan os.Signal, 8)
	forward := []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT}
	if req.TTY {
		forward = append(forward, syscall.SIGWINCH)
	}
	// Raw mode only when the keyboard goes to the guest (-it): then Ctrl-C
	// is a byte for the guest's pty. With -t alone it stays a local SIGINT,
	// forwarded below.
	if req.TTY && req.Stdin {
		old, err := term.MakeRaw(stdinFd)
		if err != nil {
			return execFailf("putting the terminal in raw mode: %s", errMessage(err))
		}
		defer term.Restore(stdinFd, old)
	}
	signal.Notify(sigs, forward...)
	defer signal.Stop(sigs)
	go func() {
		for s := range sigs {
			if s == syscall.SIGWINCH {
				if w, h, err := term.GetSize(sizeFd); err == nil {
					_ = e.Resize(uint16(h), uint16(w))
				}
				continue
			}
			_ = e.Signal(s.(syscall.Signal))
		}
	}()
	var stdin *os.File
	if req.Stdin {
		stdin = os.Stdin
	}
	var code int
	if stdin != nil {
		code, err = e.Wait(stdin, a.stdout, a.stderr)
	} else {
		code, err = e.Wait(nil, a.stdout, a.stderr)
	}
	if err != nil {
		return execFailf("vm %s: %s", target.VM.Name, errMessage(err))
	}
	if code != 0 {
		return &silentExit{code: code}
	}
	return nil
}

func hasEnv(env []string, key string) bool {
	for _, kv := range env {
		if k, _, _ := strings.Cut(kv, "="); k == key {
			return true
		}
	}
	return false
}
