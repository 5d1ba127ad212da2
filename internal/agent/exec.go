package agent

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// defaultPath is the command's PATH unless the request sets one.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// execStartFailure is a command that could not be started.
type execStartFailure struct {
	code int
	msg  string
}

func (e *execStartFailure) Error() string { return e.msg }

func startFailf(code int, format string, args ...any) error {
	return &execStartFailure{code: code, msg: fmt.Sprintf(format, args...)}
}

// exec serves POST /v1/exec: it starts the command, answers 101 and then
// relays frames until the command exits and its output is drained.
func (s *server) exec(w http.ResponseWriter, r *http.Request) {
	var req ExecRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, maxBody)).Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, ExecStartError{Error: "decoding exec request: " + err.Error(), Code: 125})
		return
	}
	if !strings.EqualFold(r.Header.Get("Upgrade"), execUpgrade) {
		writeJSON(w, http.StatusBadRequest, ExecStartError{Error: "exec needs Upgrade: " + execUpgrade, Code: 125})
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		writeJSON(w, http.StatusInternalServerError, ExecStartError{Error: "connection cannot be hijacked", Code: 125})
		return
	}
	p, err := startProcess(req)
	if err != nil {
		var sf *execStartFailure
		if errors.As(err, &sf) {
			writeJSON(w, http.StatusUnprocessableEntity, ExecStartError{Error: sf.msg, Code: sf.code})
			return
		}
		writeJSON(w, http.StatusInternalServerError, ExecStartError{Error: err.Error(), Code: 125})
		return
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		p.kill()
		s.opts.Logger.Error("exec: hijacking connection", "err", err)
		return
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: "+execUpgrade+"\r\n\r\n"); err != nil {
		p.kill()
		return
	}
	p.relay(conn, brw.Reader)
}

// process is a started command and the host ends of its stdio.
type process struct {
	proc   *os.Process
	tty    bool
	stdin  *os.File // nil without Stdin
	ptm    *os.File // pty master (tty only)
	outs   []*os.File
	wmu    sync.Mutex
	closed sync.Once
}

func startProcess(req ExecRequest) (*process, error) {
	if len(req.Argv) == 0 || req.Argv[0] == "" {
		return nil, startFailf(125, "exec needs a command")
	}
	u, err := lookupUser(req.User)
	if err != nil {
		return nil, err
	}
	env := baseEnv(u, req.TTY)
	env = mergeEnv(env, req.Env)
	dir := req.Workdir
	if dir == "" {
		dir = u.HomeDir
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return nil, startFailf(125, "workdir %s is not a directory in the guest", dir)
	}
	bin, err := lookPath(req.Argv[0], envValue(env, "PATH"), dir)
	if err != nil {
		return nil, err
	}

	p := &process{tty: req.TTY}
	attr := &os.ProcAttr{Dir: dir, Env: env, Sys: &syscall.SysProcAttr{}}
	if cred := u.credential(); cred != nil {
		attr.Sys.Credential = cred
	}
	var childEnds []*os.File
	closeAll := func(fs []*os.File) {
		for _, f := range fs {
			if f != nil {
				f.Close()
			}
		}
	}
	if req.TTY {
		ptm, pts, err := openPty(req.Rows, req.Cols)
		if err != nil {
			return nil, err
		}
		p.ptm = ptm
		p.outs = []*os.File{ptm}
		childEnds = []*os.File{pts}
		attr.Files = []*os.File{pts, pts, pts}
		attr.Sys.Setsid, attr.Sys.Setctty, attr.Sys.Ctty = true, true, 0
	} else {
		attr.Sys.Setpgid = true
		var in *os.File
		if req.Stdin {
			r, w, err := os.Pipe()
			if err != nil {
				return nil, fmt.Errorf("creating stdin pipe: %w", err)
			}
			in, p.stdin = r, w
		} else {
			in, err = os.Open(os.DevNull)
			if err != nil {
				return nil, fmt.Errorf("opening %s: %w", os.DevNull, err)
			}
		}
		or, ow, err := os.Pipe()
		if err != nil {
			closeAll([]*os.File{in, p.stdin})
			return nil, fmt.Errorf("creating stdout pipe: %w", err)
		}
		er, ew, err := os.Pipe()
		if err != nil {
			closeAll([]*os.File{in, p.stdin, or, ow})
			return nil, fmt.Errorf("creating stderr pipe: %w", err)
		}
		p.outs = []*os.File{or, er}
		childEnds = []*os.File{in, ow, ew}
		attr.Files = childEnds
	}
	proc, err := os.StartProcess(bin, req.Argv, attr)
	closeAll(childEnds)
	if err != nil {
		closeAll(p.outs)
		closeAll([]*os.File{p.stdin})
		if errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.ENOEXEC) {
			return nil, startFailf(126, "%s: cannot run: %v", req.Argv[0], errnoText(err))
		}
		return nil, fmt.Errorf("starting %s: %w", req.Argv[0], err)
	}
	p.proc = proc
	return p, nil
}

// relay pumps output to conn and frames from br into the command until the
// command has exited and its output is drained, then sends the exit frame.
func (p *process) relay(conn io.Writer, br *bufio.Reader) {
	send := func(typ byte, b []byte) error {
		p.wmu.Lock()
		defer p.wmu.Unlock()
		return writeFrame(conn, typ, b)
	}
	var outWG sync.WaitGroup
	types := []byte{frameStdout, frameStderr}
	for i, f := range p.outs {
		outWG.Add(1)
		go func() {
			defer outWG.Done()
			buf := make([]byte, chunk)
			gone := false
			for {
				n, err := f.Read(buf)
				if n > 0 && !gone {
					// After a failed send the client is gone: keep draining
					// so the command is not blocked on a full pipe.
					gone = send(types[i], buf[:n]) != nil
				}
				if err != nil { // EOF, or EIO on a pty master once the slave closes
					return
				}
			}
		}()
	}
	exited := make(chan struct{})
	go p.readClient(br, exited)

	st, err := p.proc.Wait()
	close(exited)
	code := 125
	if err == nil {
		code = exitCode(st)
	}
	outWG.Wait()
	for _, f := range p.outs {
		f.Close()
	}
	p.closeStdin()
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(int32(code)))
	_ = send(frameExit, b[:])
}

// readClient applies the client's frames. A client that goes away before
// the command exits takes the command with it (SIGKILL to its group).
func (p *process) readClient(br *bufio.Reader, exited <-chan struct{}) {
	stdin := make(chan []byte, 16)
	go func() { // stdin writes may block; frames keep flowing meanwhile
		for b := range stdin {
			if b == nil {
				p.closeStdin()
				continue
			}
			if w := p.stdinWriter(); w != nil {
				_, _ = w.Write(b)
			}
		}
	}()
	defer close(stdin)
	for {
		typ, payload, err := readFrame(br, nil)
		if err != nil {
			select {
			case <-exited:
			default:
				p.kill()
			}
			return
		}
		switch typ {
		case frameStdin:
			stdin <- payload
		case frameStdinEOF:
			if p.tty {
				stdin <- []byte{4} // ^D: the pty's EOF
			} else {
				stdin <- nil
			}
		case frameSignal:
			if len(payload) == 1 && payload[0] > 0 && payload[0] < 65 {
				p.signal(syscall.Signal(payload[0]))
			}
		case frameResize:
			if len(payload) == 4 && p.ptm != nil {
				setWinsize(p.ptm, binary.BigEndian.Uint16(payload[0:2]), binary.BigEndian.Uint16(payload[2:4]))
			}
		}
	}
}

func (p *process) stdinWriter() *os.File {
	if p.tty {
		return p.ptm
	}
	return p.stdin
}

func (p *process) closeStdin() {
	if p.stdin != nil {
		p.closed.Do(func() { p.stdin.Close() })
	}
}

// signal delivers sig to the command's process group (its session with a
// pty), falling back to the process itself.
func (p *process) signal(sig syscall.Signal) {
	if err := syscall.Kill(-p.proc.Pid, sig); err != nil {
		_ = p.proc.Signal(sig)
	}
}

func (p *process) kill() { p.signal(syscall.SIGKILL) }

func exitCode(st *os.ProcessState) int {
	ws, ok := st.Sys().(syscall.WaitStatus)
	if !ok {
		return st.ExitCode()
	}
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

// execUser is who the command runs as.
type execUser struct {
	uid, gid uint32
	groups   []uint32
	name     string
	HomeDir  string
	shell    string
}

func (u execUser) credential() *syscall.Credential {
	if uint32(os.Geteuid()) == u.uid && uint32(os.Getegid()) == u.gid {
		return nil
	}
	return &syscall.Credential{Uid: u.uid, Gid: u.gid, Groups: u.groups}
}

func lookupUser(name string) (execUser, error) {
	if name == "" {
		name = "root"
	}
	u, err := user.Lookup(name)
	if err != nil {
		if _, nerr := strconv.ParseUint(name, 10, 32); nerr == nil {
			u, err = user.LookupId(name)
		}
	}
	if err != nil {
		if name == "root" { // a guest without /etc/passwd
			return execUser{name: "root", HomeDir: "/root", shell: "/bin/sh"}, nil
		}
		return execUser{}, startFailf(125, "no user %q in the guest", name)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	eu := execUser{uid: uint32(uid), gid: uint32(gid), name: u.Username, HomeDir: u.HomeDir, shell: "/bin/sh"}
	if ids, err := u.GroupIds(); err == nil {
		for _, g := range ids {
			if n, err := strconv.ParseUint(g, 10, 32); err == nil {
				eu.groups = append(eu.groups, uint32(n))
			}
		}
	}
	if eu.HomeDir == "" {
		eu.HomeDir = "/"
	}
	return eu, nil
}

func baseEnv(u execUser, tty bool) []string {
	env := []string{"PATH=" + defaultPath, "HOME=" + u.HomeDir, "USER=" + u.name, "LOGNAME=" + u.name, "SHELL=" + u.shell}
	if tty {
		env = append(env, "TERM=xterm-256color")
	}
	return env
}

// mergeEnv overrides base with extra (K=V entries; a later key wins).
func mergeEnv(base, extra []string) []string {
	out := append([]string(nil), base...)
	for _, kv := range extra {
		k, _, _ := strings.Cut(kv, "=")
		replaced := false
		for i, b := range out {
			if bk, _, _ := strings.Cut(b, "="); bk == k {
				out[i], replaced = kv, true
				break
			}
		}
		if !replaced {
			out = append(out, kv)
		}
	}
	return out
}

func envValue(env []string, key string) string {
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v
		}
	}
	return ""
}

// lookPath finds name like a shell does: a name with a slash is used as is
// (relative to dir), anything else is searched in path.
func lookPath(name, path, dir string) (string, error) {
	check := func(p string) error {
		st, err := os.Stat(p)
		if err != nil {
			return err
		}
		if st.IsDir() || st.Mode()&0o111 == 0 {
			return fs.ErrPermission
		}
		return nil
	}
	if strings.Contains(name, "/") {
		p := name
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		if err := check(p); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return "", startFailf(127, "%s: no such file in the guest", name)
			}
			return "", startFailf(126, "%s: cannot run: %v", name, errnoText(err))
		}
		return p, nil
	}
	denied := ""
	for _, d := range filepath.SplitList(path) {
		if d == "" {
			d = "."
		}
		p := filepath.Join(d, name)
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		err := check(p)
		if err == nil {
			return p, nil
		}
		if errors.Is(err, fs.ErrPermission) && denied == "" {
			denied = p
		}
	}
	if denied != "" {
		return "", startFailf(126, "%s: permission denied", denied)
	}
	return "", startFailf(127, "%s: command not found in the guest", name)
}

func errnoText(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	return err.Error()
}

// openPty opens a new pty pair sized rows x cols.
func openPty(rows, cols uint16) (*os.File, *os.File, error) {
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("opening /dev/ptmx: %w", err)
	}
	ptm := os.NewFile(uintptr(fd), "/dev/ptmx")
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		ptm.Close()
		return nil, nil, fmt.Errorf("unlocking pty: %w", err)
	}
	n, err := unix.IoctlGetUint32(fd, unix.TIOCGPTN)
	if err != nil {
		ptm.Close()
		return nil, nil, fmt.Errorf("reading pty number: %w", err)
	}
	name := "/dev/pts/" + strconv.FormatUint(uint64(n), 10)
	sfd, err := unix.Open(name, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		ptm.Close()
		return nil, nil, fmt.Errorf("opening %s: %w", name, err)
	}
	pts := os.NewFile(uintptr(sfd), name)
	if rows == 0 || cols == 0 {
		rows, cols = 24, 80
	}
	setWinsize(ptm, rows, cols)
	return ptm, pts, nil
}

func setWinsize(f *os.File, rows, cols uint16) {
	_ = unix.IoctlSetWinsize(int(f.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols})
}
