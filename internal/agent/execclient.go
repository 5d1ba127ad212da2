package agent

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
)

// ExecError is a command the agent could not start; Code is 125, 126 or
// 127 (see ExecStartError).
type ExecError struct {
	Code int
	Msg  string
}

func (e *ExecError) Error() string { return e.Msg }

// ErrExecUnsupported: the agent has no /v1/exec (it predates it).
var ErrExecUnsupported = errors.New("the guest agent does not support exec")

// Exec is one running command on a connection to the agent.
type Exec struct {
	conn net.Conn
	br   *bufio.Reader
	wmu  sync.Mutex
}

// StartExec sends req on conn (a fresh connection to the agent) and returns
// once the command runs. On failure conn is closed.
func StartExec(conn net.Conn, req ExecRequest) (*Exec, error) {
	body, err := json.Marshal(req)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("encoding exec request: %w", err)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "POST %s HTTP/1.1\r\nHost: agent\r\nConnection: Upgrade\r\nUpgrade: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", PathExec, execUpgrade, len(body))
	b.Write(body)
	if _, err := conn.Write(b.Bytes()); err != nil {
		conn.Close()
		return nil, fmt.Errorf("sending exec request: %w", err)
	}
	br := bufio.NewReaderSize(conn, 64<<10)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("reading exec response: %w", err)
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return &Exec{conn: conn, br: br}, nil
	}
	defer conn.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed {
		return nil, ErrExecUnsupported
	}
	var se ExecStartError
	if json.Unmarshal(raw, &se) == nil && se.Error != "" {
		code := se.Code
		if code == 0 {
			code = 125
		}
		return nil, &ExecError{Code: code, Msg: se.Error}
	}
	msg := strings.TrimSpace(string(raw))
	if len(msg) > 200 {
		msg = msg[:200] + "..."
	}
	return nil, fmt.Errorf("agent %s answered %s: %s", PathExec, resp.Status, msg)
}

func (e *Exec) send(typ byte, payload []byte) error {
	e.wmu.Lock()
	defer e.wmu.Unlock()
	return writeFrame(e.conn, typ, payload)
}

// Signal delivers sig to the command's process group.
func (e *Exec) Signal(sig syscall.Signal) error {
	return e.send(frameSignal, []byte{byte(sig)})
}

// Resize sets the pty's window size (a no-op without TTY).
func (e *Exec) Resize(rows, cols uint16) error {
	var b [4]byte
	binary.BigEndian.PutUint16(b[0:2], rows)
	binary.BigEndian.PutUint16(b[2:4], cols)
	return e.send(frameResize, b[:])
}

// Close ends the session; a command still running is killed by the agent.
func (e *Exec) Close() error { return e.conn.Close() }

// Wait relays stdin (when not nil: until its EOF, which is passed on) and
// the command's output until it exits, and returns its exit code. stdin is
// read in a goroutine that may outlive Wait when it blocks.
func (e *Exec) Wait(stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	if stdin != nil {
		go func() {
			buf := make([]byte, chunk)
			for {
				n, err := stdin.Read(buf)
				if n > 0 {
					if e.send(frameStdin, buf[:n]) != nil {
						return
					}
				}
				if err != nil {
					_ = e.send(frameStdinEOF, nil)
					return
				}
			}
		}()
	}
	buf := make([]byte, chunk+5)
	for {
		typ, payload, err := readFrame(e.br, buf)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return 0, errors.New("the agent closed the exec connection before the command's exit status")
			}
			return 0, fmt.Errorf("reading from the agent: %w", err)
		}
		switch typ {
		case frameStdout:
			if _, err := stdout.Write(payload); err != nil {
				return 0, fmt.Errorf("writing stdout: %w", err)
			}
		case frameStderr:
			if _, err := stderr.Write(payload); err != nil {
				return 0, fmt.Errorf("writing stderr: %w", err)
			}
		case frameExit:
			if len(payload) != 4 {
				return 0, fmt.Errorf("exit frame of %d bytes, want 4", len(payload))
			}
			return int(int32(binary.BigEndian.Uint32(payload))), nil
		}
	}
}
