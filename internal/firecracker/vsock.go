package firecracker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Errors of DialVsock, to be told apart with errors.Is.
var (
	// ErrVsockNoSocket: the vsock UDS does not exist or nothing listens on
	// it (Firecracker is not running or the vsock device was never set up).
	ErrVsockNoSocket = errors.New("vsock socket not available")
	// ErrVsockRefused: Firecracker closed the connection without "OK": no
	// process in the guest listens on the port (yet).
	ErrVsockRefused = errors.New("vsock connection refused by guest")
	// ErrVsockTimeout: the handshake did not finish before the context's
	// deadline. The error also wraps context.DeadlineExceeded.
	ErrVsockTimeout = errors.New("vsock handshake timed out")
)

// maxVsockReply bounds the "OK <port>\n" line.
const maxVsockReply = 32

// DialVsock connects to the guest's vsock port through Firecracker's hybrid
// vsock UDS: it sends "CONNECT <port>\n" and expects "OK <host_port>\n". The
// returned connection carries the guest protocol from the first byte after
// that line. ctx bounds the whole handshake.
func DialVsock(ctx context.Context, udsPath string, port uint32) (net.Conn, error) {
	what := fmt.Sprintf("dialing vsock port %d via %s", port, udsPath)
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", udsPath)
	if err != nil {
		switch {
		case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ECONNREFUSED):
			return nil, fmt.Errorf("%s: %w: %v", what, ErrVsockNoSocket, err)
		case ctx.Err() != nil:
			return nil, ctxError(what, ctx)
		}
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	// Cancellation (not only a deadline) interrupts blocked I/O.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	reply, err := handshake(conn, port)
	if !stop() || ctx.Err() != nil {
		conn.Close()
		return nil, ctxError(what, ctx)
	}
	if err != nil {
		conn.Close()
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, fmt.Errorf("%s: %w: %w", what, ErrVsockTimeout, context.DeadlineExceeded)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
			return nil, fmt.Errorf("%s: %w (nothing listens on port %d in the guest)", what, ErrVsockRefused, port)
		}
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if !strings.HasPrefix(reply, "OK ") {
		conn.Close()
		return nil, fmt.Errorf("%s: unexpected reply %q, want \"OK <port>\"", what, reply)
	}
	if _, err := strconv.ParseUint(strings.TrimPrefix(reply, "OK "), 10, 32); err != nil {
		conn.Close()
		return nil, fmt.Errorf("%s: unexpected reply %q, want \"OK <port>\"", what, reply)
	}
	conn.SetDeadline(time.Time{})
	return conn, nil
}

func ctxError(what string, ctx context.Context) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w: %w", what, ErrVsockTimeout, ctx.Err())
	}
	return fmt.Errorf("%s: %w", what, ctx.Err())
}

// handshake sends CONNECT and reads the reply line one byte at a time, so no
// byte of the guest protocol that follows it is consumed.
func handshake(conn net.Conn, port uint32) (string, error) {
	if _, err := io.WriteString(conn, "CONNECT "+strconv.FormatUint(uint64(port), 10)+"\n"); err != nil {
		return "", err
	}
	var line []byte
	b := make([]byte, 1)
	for {
		n, err := conn.Read(b)
		if n == 1 {
			if b[0] == '\n' {
				return string(line), nil
			}
			line = append(line, b[0])
			if len(line) > maxVsockReply {
				return "", fmt.Errorf("reply %q... is too long", line)
			}
			continue
		}
		if err != nil {
			return "", err
		}
	}
}
