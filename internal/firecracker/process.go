package firecracker

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"banger/internal/procwatch"
)

// ErrNotRunning means no live process with that pid serves the expected
// API socket (it exited, is a zombie, or the pid was reused).
var ErrNotRunning = errors.New("firecracker process not running")

// Adopt holds the Firecracker process pid in w after checking, with its
// pidfd held, that it is alive and serves sock (its command line names
// "--api-sock sock"), so a pid reused by another process is never taken for
// it. It returns an error wrapping ErrNotRunning when pid is not that process.
func Adopt(w *procwatch.Watcher, pid int, sock string) (*procwatch.Proc, error) {
	p, err := w.Adopt(pid, func() error {
		if !Alive(pid, sock) {
			return fmt.Errorf("it is not a live firecracker serving %s: %w", sock, ErrNotRunning)
		}
		return nil
	})
	if errors.Is(err, procwatch.ErrGone) {
		return nil, fmt.Errorf("%w: %w", err, ErrNotRunning)
	}
	return p, err
}

// Exited fits WaitReady's exited parameter for a process held by p: once it
// has exited, it says how, with the last error lines of each of logPaths
// (Firecracker's log, the console), on one line.
func Exited(p *procwatch.Proc, logPaths ...string) func() (bool, string) {
	return func() (bool, string) {
		if !p.Exited() {
			return false, ""
		}
		return true, p.Status().String() + LogSummary(logPaths...)
	}
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
