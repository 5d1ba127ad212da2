package agent

import (
	"encoding/binary"
	"fmt"
	"io"
)

// ProtocolVersion is the agent protocol this package speaks, reported in
// /healthz. Agents from before versioning report nothing (0).
//
//	1: POST /v1/exec (upgrade to a framed stream, see ExecRequest).
//	2: POST /v1/clock (step the guest clock to the host's, see ClockRequest).
const ProtocolVersion = 2

// ProtocolExec is the first protocol version with /v1/exec.
const ProtocolExec = 1

// ProtocolClock is the first protocol version with /v1/clock.
const ProtocolClock = 2

// PathExec is the exec endpoint.
const PathExec = "/v1/exec"

// execUpgrade is the Upgrade token of /v1/exec.
const execUpgrade = "banger-exec"

// ExecRequest is the JSON body of POST /v1/exec. When the command starts,
// the agent answers 101 Switching Protocols and the connection carries
// frames both ways; when it cannot start, the agent answers 4xx with an
// ExecStartError body.
type ExecRequest struct {
	Argv []string `json:"argv"`
	// Env entries (K=V) are added to the base environment (PATH, HOME, USER,
	// LOGNAME, SHELL and, with TTY, TERM), overriding it.
	Env []string `json:"env,omitempty"`
	// User runs the command as that user (name or uid); "" is root.
	User string `json:"user,omitempty"`
	// Workdir is the working directory; "" is the user's home (/root).
	Workdir string `json:"workdir,omitempty"`
	// Stdin: the client sends stdin frames; without it stdin is /dev/null.
	Stdin bool `json:"stdin,omitempty"`
	// TTY runs the command on a new pty of Rows x Cols (its stdout and
	// stderr both arrive as stdout frames).
	TTY  bool   `json:"tty,omitempty"`
	Rows uint16 `json:"rows,omitempty"`
	Cols uint16 `json:"cols,omitempty"`
}

// ExecStartError is the body of a 4xx answer to /v1/exec. Code is 126 when
// the command was found but cannot be run, 127 when it was not found, 125
// for a bad request (unknown user, missing workdir).
type ExecStartError struct {
	Error string `json:"error"`
	Code  int    `json:"code"`
}

// Frame types. Every frame is type (1 byte), payload length (uint32, big
// endian), payload.
const (
	frameStdin    byte = 1 // client → agent: bytes for the command's stdin
	frameStdout   byte = 2 // agent → client
	frameStderr   byte = 3 // agent → client
	frameStdinEOF byte = 4 // client → agent: close the command's stdin
	frameSignal   byte = 5 // client → agent: payload is the signal number (1 byte)
	frameResize   byte = 6 // client → agent: rows, cols (uint16 each, big endian)
	frameExit     byte = 7 // agent → client: exit code (int32, big endian); last frame
)

// maxFrame bounds a frame's payload.
const maxFrame = 1 << 20

// chunk is how much output goes into one frame.
const chunk = 32 << 10

func writeFrame(w io.Writer, typ byte, payload []byte) error {
	var hdr [5]byte
	hdr[0] = typ
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(payload)))
	if len(payload) == 0 {
		_, err := w.Write(hdr[:])
		return err
	}
	// One write per frame, so concurrent writers holding a lock never
	// interleave and small frames go in one syscall.
	buf := make([]byte, 5+len(payload))
	copy(buf, hdr[:])
	copy(buf[5:], payload)
	_, err := w.Write(buf)
	return err
}

// readFrame reads one frame into buf (grown as needed) and returns its type
// and payload.
func readFrame(r io.Reader, buf []byte) (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > maxFrame {
		return 0, nil, fmt.Errorf("exec frame of %d bytes is larger than %d", n, maxFrame)
	}
	if cap(buf) < int(n) {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		return 0, nil, fmt.Errorf("reading exec frame: %w", io.ErrUnexpectedEOF)
	}
	return hdr[0], buf, nil
}
