// Package procwatch watches processes through pidfds. One goroutine waits on
// all of them with epoll, so the number of OS threads does not grow with the
// number of processes watched (os.Process.Wait holds one thread per process
// in waitid). Signals go through the pidfd, so a pid that was reused by
// another process after the watched one ended is never signalled. Children
// are reaped (waitid on the pidfd) as soon as they exit, so none is left a
// zombie.
//
// It needs Linux 5.4 (pidfd_open, CLONE_PIDFD, waitid P_PIDFD); Firecracker
// itself needs 5.10.
package procwatch

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"strconv"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

var (
	// ErrGone means the process has exited (and, for a child, been reaped)
	// or no process has that pid.
	ErrGone = errors.New("process has exited")
	// ErrReleased means the Proc was released or its Watcher closed: the
	// process may still run but is no longer held.
	ErrReleased = errors.New("process is no longer watched")
	// ErrClosed means the Watcher is closed.
	ErrClosed = errors.New("process watcher is closed")
)

// Status is how a watched process ended.
type Status struct {
	// Known is false when the exit status cannot be read: the process was
	// not our child (adopted), or it was gone before it could be watched.
	Known  bool
	Code   int            // exit code when it exited normally; -1 otherwise
	Signal syscall.Signal // the signal that killed it, or 0
}

// Clean reports an exit with status 0.
func (s Status) Clean() bool { return s.Known && s.Signal == 0 && s.Code == 0 }

func (s Status) String() string {
	switch {
	case !s.Known:
		return "exit status unknown (not our child)"
	case s.Signal != 0:
		return "killed by signal " + SignalName(s.Signal)
	default:
		return "exit status " + strconv.Itoa(s.Code)
	}
}

// SignalName is "SIGKILL" for syscall.SIGKILL, or the number.
func SignalName(sig syscall.Signal) string {
	if n := unix.SignalName(sig); n != "" {
		return n
	}
	return "signal " + strconv.Itoa(int(sig))
}

// Proc is one watched process.
type Proc struct {
	pid   int
	child bool
	w     *Watcher
	done  chan struct{}

	mu       sync.Mutex
	fd       int // the pidfd; -1 once the process is reaped or released
	st       Status
	notify   []func(*Proc)
	released bool
}

// Pid is the process id (meaningful only while the process runs).
func (p *Proc) Pid() int { return p.pid }

// Child reports whether the process is our child, so its exit status is known.
func (p *Proc) Child() bool { return p.child }

// Done is closed once the process has exited (and, for a child, been reaped).
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Status is how the process ended; the zero Status until Done is closed.
func (p *Proc) Status() Status {
	select {
	case <-p.done:
		return p.st
	default:
		return Status{}
	}
}

// Signal sends sig through the pidfd. It returns ErrGone once the process
// has exited: a pidfd never names a later process that reused the pid.
func (p *Proc) Signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fd < 0 {
		if p.released {
			return fmt.Errorf("signalling pid %d: %w", p.pid, ErrReleased)
		}
		return fmt.Errorf("signalling pid %d: %w", p.pid, ErrGone)
	}
	err := unix.PidfdSendSignal(p.fd, sig, nil, 0)
	if errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("signalling pid %d: %w", p.pid, ErrGone)
	}
	if err != nil {
		return fmt.Errorf("sending %s to pid %d: %w", SignalName(sig), p.pid, err)
	}
	return nil
}

// Kill sends SIGKILL.
func (p *Proc) Kill() error { return p.Signal(syscall.SIGKILL) }

// Wait waits for the process to exit or ctx to end.
func (p *Proc) Wait(ctx context.Context) (Status, error) {
	select {
	case <-p.done:
		return p.st, nil
	case <-ctx.Done():
		return Status{}, fmt.Errorf("waiting for pid %d to exit: %w", p.pid, ctx.Err())
	}
}

// Notify has f called once, on its own goroutine, after the process has
// exited: at once if it already has. Close waits for the calls under way.
func (p *Proc) Notify(f func(*Proc)) {
	p.mu.Lock()
	if !p.Exited() {
		p.notify = append(p.notify, f)
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	p.w.dispatch(p, []func(*Proc){f}, false)
}

// Release stops watching a process that still runs and closes its pidfd:
// Done is then never closed and Signal returns ErrReleased. It does nothing
// once the process has exited.
func (p *Proc) Release() {
	p.mu.Lock()
	if p.fd < 0 {
		p.mu.Unlock()
		return
	}
	fd := p.fd
	p.fd = -1
	p.released = true
	p.notify = nil
	p.mu.Unlock()
	p.w.drop(fd, p)
}

// Watcher watches processes with one goroutine.
type Watcher struct {
	epfd int
	evfd int // written by Close to stop the loop

	mu       sync.Mutex
	procs    map[int]*Proc // by pidfd
	closed   bool
	loopDone chan struct{}
	calls    sync.WaitGroup
}

// New starts a watcher.
func New() (*Watcher, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("creating process watcher: epoll: %w", err)
	}
	evfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("creating process watcher: eventfd: %w", err)
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(evfd)}); err != nil {
		unix.Close(evfd)
		unix.Close(epfd)
		return nil, fmt.Errorf("creating process watcher: %w", err)
	}
	w := &Watcher{epfd: epfd, evfd: evfd, procs: map[int]*Proc{}, loopDone: make(chan struct{})}
	go w.loop()
	return w, nil
}

// Compact rebuilds the watcher's table at its present size: a Go map keeps
// the room it grew to, so one that held 500 processes holds it after
// they have all gone.
func (w *Watcher) Compact() {
	w.mu.Lock()
	defer w.mu.Unlock()
	procs := make(map[int]*Proc, len(w.procs))
	maps.Copy(procs, w.procs)
	w.procs = procs
}

// Len is the number of processes watched.
func (w *Watcher) Len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.procs)
}

// Start starts a process like os.StartProcess and watches it. Nothing else
// may wait for it.
func (w *Watcher) Start(name string, argv []string, attr *os.ProcAttr) (*Proc, error) {
	a := *attr
	var sys syscall.SysProcAttr
	if attr.Sys != nil {
		sys = *attr.Sys
	}
	pidfd := -1
	sys.PidFD = &pidfd
	a.Sys = &sys
	p, err := os.StartProcess(name, argv, &a)
	if err != nil {
		return nil, err
	}
	if pidfd < 0 {
		// A kernel without CLONE_PIDFD: the process cannot be held safely.
		_ = p.Kill()
		_, _ = p.Wait()
		return nil, fmt.Errorf("starting %s: this kernel gives no pidfd for a child (Linux 5.4 or later is needed)", name)
	}
	pid := p.Pid
	// os keeps its own duplicate of the pidfd; ours does the waiting.
	_ = p.Release()
	return w.add(pid, pidfd, true)
}

// Adopt watches a process this program did not start, or did start before
// it was watched. verify, when not nil, is called once the pidfd is held and
// must fail unless pid is the expected process (by its /proc entries); it
// counts only if the process still runs after it returned, so what it read
// under /proc/<pid> belonged to the held process and not to a later one
// that reused the pid. Adopt returns ErrGone when no such process runs.
func (w *Watcher) Adopt(pid int, verify func() error) (*Proc, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("adopting pid %d: %w", pid, ErrGone)
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil, fmt.Errorf("adopting pid %d: %w", pid, ErrGone)
	}
	if err != nil {
		return nil, fmt.Errorf("adopting pid %d: pidfd_open: %w", pid, err)
	}
	if verify != nil {
		if err := verify(); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("adopting pid %d: %w", pid, err)
		}
		if readable(fd) {
			unix.Close(fd)
			return nil, fmt.Errorf("adopting pid %d: it exited while being checked: %w", pid, ErrGone)
		}
	}
	// Our own child (started before it was watched) can be reaped, and its
	// status read; anyone else's cannot (ECHILD).
	child := false
	if _, exited, err := waitPidfd(fd); err == nil {
		child = true
		if exited {
			// Reaped just now: it already ended.
			unix.Close(fd)
			return nil, fmt.Errorf("adopting pid %d: %w", pid, ErrGone)
		}
	}
	return w.add(pid, fd, child)
}

// Gone returns a Proc for a process that has already ended (its Done is
// closed, its status unknown), for callers that treat "exited before it
// could be watched" like any other exit.
func (w *Watcher) Gone(pid int) *Proc {
	p := &Proc{pid: pid, w: w, fd: -1, done: make(chan struct{}), st: Status{Code: -1}}
	close(p.done)
	return p
}

func (w *Watcher) add(pid, fd int, child bool) (*Proc, error) {
	p := &Proc{pid: pid, child: child, w: w, fd: fd, done: make(chan struct{})}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		unix.Close(fd)
		return nil, ErrClosed
	}
	// Level-triggered: an exit not handled in one round is seen again.
	if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("watching pid %d: %w", pid, err)
	}
	w.procs[fd] = p
	return p, nil
}

// drop forgets fd (removing it from the epoll set before the number can be
// reused) and closes it.
func (w *Watcher) drop(fd int, p *Proc) {
	w.mu.Lock()
	if w.procs[fd] == p {
		delete(w.procs, fd)
		_ = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, fd, nil)
	}
	w.mu.Unlock()
	unix.Close(fd)
}

func (w *Watcher) loop() {
	defer close(w.loopDone)
	events := make([]unix.EpollEvent, 128)
	for {
		n, err := unix.EpollWait(w.epfd, events, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			// Not expected with valid descriptors; nothing would be watched
			// any more, so make it loud in the one way a library can.
			panic(fmt.Sprintf("procwatch: epoll_wait: %v", err))
		}
		for _, ev := range events[:n] {
			fd := int(ev.Fd)
			if fd == w.evfd {
				return
			}
			w.mu.Lock()
			p := w.procs[fd]
			w.mu.Unlock()
			if p != nil {
				w.collect(p)
			}
		}
	}
}

// collect handles a readable pidfd: the process has exited. It reaps a
// child. A wake-up that finds the process still running (an event for a
// pidfd number that was closed and reused meanwhile) is ignored.
func (w *Watcher) collect(p *Proc) {
	p.mu.Lock()
	if p.fd < 0 {
		p.mu.Unlock()
		return
	}
	st := Status{Code: -1}
	if p.child {
		s, exited, err := waitPidfd(p.fd)
		switch {
		case err != nil:
			// Reaped by someone else (ECHILD): it ended, status unknown.
		case !exited:
			p.mu.Unlock()
			return
		default:
			st = s
		}
	} else if !readable(p.fd) {
		p.mu.Unlock()
		return
	}
	fd := p.fd
	p.fd = -1
	p.st = st
	p.mu.Unlock()
	// Unwatched before Done closes, so Len never counts an exited process
	// that a caller has seen end.
	w.drop(fd, p)
	p.mu.Lock()
	fns := p.notify
	p.notify = nil
	close(p.done)
	p.mu.Unlock()
	w.dispatch(p, fns, true)
}

// dispatch calls fns on their own goroutines. From the loop it always does
// (Close waits for the loop to end before it waits for the calls); from
// Notify, only while the watcher is open.
func (w *Watcher) dispatch(p *Proc, fns []func(*Proc), fromLoop bool) {
	if len(fns) == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed && !fromLoop {
		return
	}
	for _, f := range fns {
		w.calls.Add(1)
		go func() {
			defer w.calls.Done()
			f(p)
		}()
	}
}

// Close stops watching: the loop ends, Close waits for the Notify calls
// under way (those of every exit the loop saw), and processes still running
// are released (they keep running; their Done is never closed).
func (w *Watcher) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	w.mu.Unlock()
	one := [8]byte{1}
	if _, err := unix.Write(w.evfd, one[:]); err != nil {
		return fmt.Errorf("stopping process watcher: %w", err)
	}
	<-w.loopDone
	w.calls.Wait()
	w.mu.Lock()
	left := make([]*Proc, 0, len(w.procs))
	for _, p := range w.procs {
		left = append(left, p)
	}
	w.mu.Unlock()
	for _, p := range left {
		p.Release()
	}
	unix.Close(w.evfd)
	unix.Close(w.epfd)
	return nil
}

// readable polls fd without waiting.
func readable(fd int) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return err == nil && n > 0 && fds[0].Revents != 0
	}
}

// waitPidfd reaps the child behind pidfd if it has exited (WNOHANG). err is
// ECHILD when it is not our child or was already reaped.
func waitPidfd(pidfd int) (Status, bool, error) {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PIDFD, pidfd, &info, unix.WEXITED|unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return Status{}, false, err
		}
		break
	}
	pid, status := siginfoChild(&info)
	if pid == 0 {
		return Status{}, false, nil // still running
	}
	st := Status{Known: true, Code: -1}
	switch info.Code {
	case _CLD_EXITED:
		st.Code = int(status)
	case _CLD_KILLED, _CLD_DUMPED:
		st.Signal = syscall.Signal(status)
	}
	return st, true, nil
}

// si_code values of SIGCHLD.
const (
	_CLD_EXITED = 1
	_CLD_KILLED = 2
	_CLD_DUMPED = 3
)

// siginfoChild reads si_pid and si_status from a SIGCHLD siginfo. The union
// after si_signo, si_errno and si_code is pointer-aligned; in it come si_pid
// (int32), si_uid (uint32) and si_status (int32).
func siginfoChild(info *unix.Siginfo) (pid, status int32) {
	const ptr = unsafe.Sizeof(uintptr(0))
	off := (3*unsafe.Sizeof(int32(0)) + ptr - 1) &^ (ptr - 1)
	base := unsafe.Pointer(info)
	pid = *(*int32)(unsafe.Add(base, off))
	status = *(*int32)(unsafe.Add(base, off+8))
	return pid, status
}
