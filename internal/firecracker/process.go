package firecracker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ErrNotRunning means no live process with that pid serves the expected
// API socket (it exited, is a zombie, or the pid was reused).
var ErrNotRunning = errors.New("firecracker process not running")

// tailLines is how many lines of each log an early-exit error carries.
const tailLines = 20

// Exit watches a child process started by Launch: one goroutine waits for it
// (reaping it), so its death is noticed at once.
type Exit struct {
	pid   int
	tails []string
	done  chan struct{}
	state *os.ProcessState
	err   error
}

// Watch starts the goroutine that waits for p. tailPaths (the log and console
// files) are quoted in Exited's detail. Nothing else may call p.Wait.
func Watch(p *os.Process, tailPaths ...string) *Exit {
	e := &Exit{pid: p.Pid, tails: tailPaths, done: make(chan struct{})}
	go func() {
		e.state, e.err = p.Wait()
		close(e.done)
	}()
	return e
}

// Pid is the watched process's id.
func (e *Exit) Pid() int { return e.pid }

// Done is closed once the process has exited and been reaped.
func (e *Exit) Done() <-chan struct{} { return e.done }

// State returns the exit state once Done is closed, and (nil, nil) before.
func (e *Exit) State() (*os.ProcessState, error) {
	select {
	case <-e.done:
		return e.state, e.err
	default:
		return nil, nil
	}
}

// Reason describes how the process ended ("exit status 3", "killed by
// signal SIGABRT"), or "" while it runs.
func (e *Exit) Reason() string {
	select {
	case <-e.done:
	default:
		return ""
	}
	if e.err != nil {
		return "waiting for process: " + e.err.Error()
	}
	return ExitReason(e.state)
}

// Exited reports whether the process has ended and, if so, why, followed by
// the last lines of each tail file. It fits WaitReady's exited parameter.
func (e *Exit) Exited() (bool, string) {
	r := e.Reason()
	if r == "" {
		return false, ""
	}
	return true, r + tailDetail(e.tails)
}

// PollExited is Exited for a process that is not our child (adopted after a
// daemon restart): it is dead once Alive(pid, sock) is false. The exit status
// of a non-child cannot be known.
func PollExited(pid int, sock string, tailPaths ...string) func() (bool, string) {
	return func() (bool, string) {
		if Alive(pid, sock) {
			return false, ""
		}
		return true, fmt.Sprintf("process %d is gone (exit status unknown: not our child)", pid) + tailDetail(tailPaths)
	}
}

func tailDetail(paths []string) string {
	var b strings.Builder
	for _, p := range paths {
		if p == "" {
			continue
		}
		t, err := TailFile(p, tailLines)
		if err != nil || strings.TrimSpace(t) == "" {
			continue
		}
		fmt.Fprintf(&b, "\nlast lines of %s:\n%s", filepath.Base(p), strings.TrimRight(t, "\n"))
	}
	return b.String()
}

// ExitReason describes a process state: "exit status N" or "killed by signal
// SIGNAME".
func ExitReason(ps *os.ProcessState) string {
	if ps == nil {
		return "still running"
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		name := unix.SignalName(ws.Signal())
		if name == "" {
			name = strconv.Itoa(int(ws.Signal()))
		}
		return "killed by signal " + name
	}
	return "exit status " + strconv.Itoa(ps.ExitCode())
}

// FindByAPISocket returns the pid of a live (non-zombie) process whose argv
// holds "--api-sock" immediately followed by exactly sock, or 0 when there is
// none. With several, the lowest pid wins.
func FindByAPISocket(sock string) (int, error) {
	if sock == "" {
		return 0, errors.New("finding firecracker by api socket: socket path is empty")
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, fmt.Errorf("finding firecracker by api socket %s: %w", sock, err)
	}
	found := 0
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil || pid <= 0 {
			continue
		}
		if found != 0 && pid > found {
			continue
		}
		// A plain read: kernel threads and zombies have an empty cmdline.
		b, _ := os.ReadFile("/proc/" + ent.Name() + "/cmdline")
		if namesSocket(b, sock) && !zombie(pid) {
			found = pid
		}
	}
	return found, nil
}

// Alive reports whether pid exists, is not a zombie and, when sock is not
// empty, has "--api-sock sock" on its command line.
func Alive(pid int, sock string) bool {
	if pid <= 0 {
		return false
	}
	if sock != "" && !namesSocket(readCmdline(pid), sock) {
		return false
	}
	return !zombie(pid)
}

// namesSocket reports whether the raw cmdline b holds "--api-sock" followed
// by exactly sock.
func namesSocket(b []byte, sock string) bool {
	if !bytes.Contains(b, []byte(sock)) {
		return false
	}
	args := strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "--api-sock" && args[i+1] == sock {
			return true
		}
	}
	return false
}

// readCmdline returns the raw /proc/PID/cmdline. A process caught inside
// execve (os.StartProcess returns before the kernel has set up the new argv)
// briefly shows an empty one, so an empty result from a live process that is
// not a kernel thread is read again for a few milliseconds.
func readCmdline(pid int) []byte {
	path := "/proc/" + strconv.Itoa(pid) + "/cmdline"
	for i := 0; ; i++ {
		b, err := os.ReadFile(path)
		if err != nil || len(b) > 0 || i == 20 || zombie(pid) || kernelThread(pid) {
			return b
		}
		time.Sleep(500 * time.Microsecond)
	}
}

// kernelThread reports whether pid has PF_KTHREAD in its flags.
func kernelThread(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 7 {
		return false
	}
	flags, err := strconv.ParseUint(f[6], 10, 64)
	return err == nil && flags&0x00200000 != 0
}

// zombie reports whether pid is a zombie or dead (or does not exist).
func zombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	// The state follows the last ')' that closes the command name.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return true
	}
	switch b[i+2] {
	case 'Z', 'X', 'x':
		return true
	}
	return false
}

// Kill sends sig to pid only if it is alive and serves sock (so a reused pid
// is never signalled). It returns ErrNotRunning when it is not.
func Kill(pid int, sock string, sig syscall.Signal) error {
	if pid <= 0 {
		return fmt.Errorf("signalling firecracker pid %d: %w", pid, ErrNotRunning)
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("signalling firecracker pid %d: %w", pid, ErrNotRunning)
	}
	if err == nil {
		defer unix.Close(fd)
	}
	// With a pidfd held, the check below and the signal target the same
	// process even if the pid is recycled in between.
	if !Alive(pid, sock) {
		return fmt.Errorf("signalling firecracker pid %d for %s: %w", pid, sock, ErrNotRunning)
	}
	if err == nil {
		err = unix.PidfdSendSignal(fd, sig, nil, 0)
	} else {
		err = syscall.Kill(pid, sig)
	}
	if errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("signalling firecracker pid %d: %w", pid, ErrNotRunning)
	}
	if err != nil {
		return fmt.Errorf("sending %s to firecracker pid %d: %w", unix.SignalName(sig), pid, err)
	}
	return nil
}

// WaitExit waits until pid has exited (a zombie counts as exited). It works
// for processes that are not our children: it polls a pidfd when the kernel
// has pidfd_open, and /proc otherwise. ctx bounds the wait.
func WaitExit(ctx context.Context, pid int) error {
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	if err != nil {
		return waitExitPoll(ctx, pid)
	}
	defer unix.Close(fd)
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("waiting for process %d to exit: %w", pid, err)
	}
	// Closing w on cancellation wakes poll through r's POLLHUP.
	r, w, err := os.Pipe()
	if err != nil {
		return waitExitPoll(ctx, pid)
	}
	defer r.Close()
	stop := context.AfterFunc(ctx, func() { w.Close() })
	defer func() {
		if stop() {
			w.Close()
		}
	}()
	rfd := int32(r.Fd())
	for {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}, {Fd: rfd, Events: unix.POLLIN}}
		_, err := unix.Poll(fds, -1)
		runtime.KeepAlive(r)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("waiting for process %d to exit: polling pidfd: %w", pid, err)
		}
		if fds[0].Revents != 0 {
			return nil
		}
		if fds[1].Revents != 0 {
			return fmt.Errorf("waiting for process %d to exit: %w", pid, ctx.Err())
		}
	}
}

func waitExitPoll(ctx context.Context, pid int) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for Alive(pid, "") {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for process %d to exit: %w", pid, ctx.Err())
		case <-t.C:
		}
	}
	return nil
}
