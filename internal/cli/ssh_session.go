package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	"banger/internal/api"
)

// rpcCaller is the part of the daemon client that `vm ssh` uses.
type rpcCaller interface {
	Call(ctx context.Context, method string, params, out any) error
}

// sshExitConnFailed is ssh's own exit code for a connection failure (and
// any other error of ssh itself).
const sshExitConnFailed = 255

// sshSession is one `banger vm ssh`: resolve, optionally start, touch,
// run ssh (retrying connection failures while the VM boots), remind.
type sshSession struct {
	daemon rpcCaller
	// run runs ssh with args (no argv[0]) attached to the terminal and
	// returns its exit code; an error means ssh could not be run at all.
	run      func(ctx context.Context, args []string) (int, error)
	stderr   io.Writer
	now      func() time.Time
	sleep    func(ctx context.Context, d time.Duration) error
	progress func(ctx context.Context, name string) (stop func())

	key          string
	knownHosts   string
	bootDeadline time.Duration
	startFirst   bool // --start
	reminder     bool // false with --no-reminder
}

// sshRetryInterval is the pause between connection attempts while a VM
// boots.
const sshRetryInterval = time.Second

// connect runs the whole session and returns ssh's exit code.
func (s *sshSession) connect(ctx context.Context, ref string, command []string) (int, error) {
	var list api.VMList
	if err := s.daemon.Call(ctx, api.MethodVMList, nil, &list); err != nil {
		return 0, err
	}
	vm, err := resolveOne(list.VMs, ref)
	if err != nil {
		return 0, failf("%v", err)
	}

	var retryUntil time.Time
	touched := false
	switch vm.State {
	case api.StateSuspended, api.StatePaused:
		// vm.touch wakes a sleeping VM and answers once its agent is up.
		if vm, err = s.wake(ctx, vm); err != nil {
			return 0, err
		}
		touched = true
		retryUntil = s.now().Add(s.bootDeadline)
	case api.StateRunning:
		if !vm.StartedAt.IsZero() {
			if until := vm.StartedAt.Add(s.bootDeadline); s.now().Before(until) {
				retryUntil = until
			}
		}
	case api.StateStarting:
		retryUntil = s.now().Add(s.bootDeadline)
	case api.StateStopped, api.StateCreated, api.StateError:
		if !s.startFirst {
			what := vm.State
			if vm.State == api.StateError && vm.LastError != "" {
				what += " (" + vm.LastError + ")"
			}
			return 0, failf("%s is %s; start it with `banger vm ssh --start %s` (or `banger vm start %s`)", vm.Name, what, vm.Name, vm.Name)
		}
		if vm, err = s.start(ctx, vm); err != nil {
			return 0, err
		}
		base := vm.StartedAt
		if base.IsZero() {
			base = s.now()
		}
		retryUntil = base.Add(s.bootDeadline)
	default:
		return 0, failf("%s is %s; wait until `banger vm show %s` says stopped, then use --start", vm.Name, vm.State, vm.Name)
	}
	if vm.IP == "" {
		return 0, failf("%s has no IP address recorded; see `banger vm show %s`", vm.Name, vm.Name)
	}

	if !touched {
		if err := s.daemon.Call(ctx, api.MethodVMTouch, api.VMRef{Ref: vm.ID}, &api.VM{}); err != nil {
			fmt.Fprintf(s.stderr, "banger: warning: recording last use of %s: %s\n", vm.Name, errMessage(err))
		}
	}

	code, err := s.runWithRetry(ctx, vm.Name, sshArgs(s.key, s.knownHosts, vm.IP, command), retryUntil)
	if err != nil {
		return 0, err
	}
	if len(command) == 0 && s.reminder {
		s.remind(ctx, vm)
	}
	return code, nil
}

// start starts a stopped VM and returns it as the daemon reports it.
func (s *sshSession) start(ctx context.Context, vm api.VM) (api.VM, error) {
	stop := func() {}
	if s.progress != nil {
		stop = s.progress(ctx, vm.Name)
	}
	var res api.VMResult
	err := s.daemon.Call(ctx, api.MethodVMStart, api.VMRef{Ref: vm.ID}, &res)
	stop()
	if err != nil {
		return api.VM{}, fmt.Errorf("starting %s: %w", vm.Name, err)
	}
	if h := res.Health; h != nil && !h.Healthy {
		fmt.Fprintf(s.stderr, "banger: %s started but its agent did not answer (%s); trying ssh anyway\n", vm.Name, h.Reason)
	} else {
		fmt.Fprintf(s.stderr, "banger: started %s\n", vm.Name)
	}
	return res.VM, nil
}

// wake resumes a suspended or paused VM (through vm.touch, which wakes it
// first) and returns it as the daemon reports it afterwards.
func (s *sshSession) wake(ctx context.Context, vm api.VM) (api.VM, error) {
	stop := func() {}
	if s.progress != nil {
		stop = s.progress(ctx, vm.Name)
	}
	var woken api.VM
	err := s.daemon.Call(ctx, api.MethodVMTouch, api.VMRef{Ref: vm.ID}, &woken)
	stop()
	if err != nil {
		return api.VM{}, fmt.Errorf("waking %s: %w", vm.Name, err)
	}
	if woken.State != api.StateRunning {
		return api.VM{}, failf("%s is %s after waking it; see `banger vm show %s`", vm.Name, woken.State, vm.Name)
	}
	fmt.Fprintf(s.stderr, "banger: woke %s (it was %s)\n", vm.Name, vm.State)
	return woken, nil
}

// runWithRetry runs ssh; while it fails to connect (exit 255) and the boot
// window (retryUntil) has not passed, it tries again.
func (s *sshSession) runWithRetry(ctx context.Context, name string, args []string, retryUntil time.Time) (int, error) {
	noted := false
	for {
		code, err := s.run(ctx, args)
		if err != nil {
			return 0, err
		}
		left := retryUntil.Sub(s.now())
		if code != sshExitConnFailed || left <= 0 {
			return code, nil
		}
		if !noted {
			fmt.Fprintf(s.stderr, "banger: %s is still booting; retrying ssh for up to %s\n", name, humanDuration(left.Round(time.Second)))
			noted = true
		}
		if err := s.sleep(ctx, min(sshRetryInterval, left)); err != nil {
			return code, nil
		}
	}
}

// remind prints one line when the VM is still running after a login.
// Nothing is printed when the VM stopped or the daemon cannot say.
func (s *sshSession) remind(ctx context.Context, vm api.VM) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var h api.Health
	if err := s.daemon.Call(ctx, api.MethodVMHealth, api.VMRef{Ref: vm.ID}, &h); err != nil || h.State != api.StateRunning {
		return
	}
	var status string
	if h.Healthy {
		up := time.Duration(h.UptimeS * float64(time.Second))
		if up <= 0 && !vm.StartedAt.IsZero() {
			up = s.now().Sub(vm.StartedAt)
		}
		status = "healthy, up " + humanDuration(up)
	} else {
		status = "unhealthy: " + h.Reason
	}
	fmt.Fprintf(s.stderr, "%s is still running (%s); stop it with: banger vm stop %s\n", vm.Name, status, vm.Name)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
