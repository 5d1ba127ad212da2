package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
)

// execSSH returns a runner for sshSession that starts bin as a child
// attached to the given streams (the terminal, in a real run) and waits for
// it. It is a child, not an exec, so banger can print the reminder after
// the login ends.
//
// While ssh runs, banger ignores the terminal's SIGINT and SIGQUIT (the
// terminal delivers them to ssh too, which decides) and forwards SIGTERM
// and SIGHUP to ssh. A caught signal is reset to its default in the child
// on exec, unlike an ignored one.
func execSSH(bin string, stdin io.Reader, stdout, stderr io.Writer) func(ctx context.Context, args []string) (int, error) {
	return func(ctx context.Context, args []string) (int, error) {
		cmd := exec.Command(bin, args...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
		sigs := make(chan os.Signal, 4)
		signal.Notify(sigs, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGTERM, syscall.SIGHUP)
		defer signal.Stop(sigs)
		if err := cmd.Start(); err != nil {
			return 0, fmt.Errorf("running %s: %w", bin, err)
		}
		done := make(chan struct{})
		defer close(done)
		go func() {
			for {
				select {
				case sig := <-sigs:
					if sig == syscall.SIGTERM || sig == syscall.SIGHUP {
						_ = cmd.Process.Signal(sig)
					}
				case <-done:
					return
				}
			}
		}()
		err := cmd.Wait()
		if err == nil {
			return 0, nil
		}
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				return 128 + int(ws.Signal()), nil
			}
			return ee.ExitCode(), nil
		}
		return 0, fmt.Errorf("running %s: %w", bin, err)
	}
}
