package agent

import (
	"bufio"
	"errors"
	"io"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// Zero-copy paths of the tunnel, for the two hops that carry a forward's
// bytes between processes on one machine (the banger CLI or daemon, and
// the fake Firecracker's agent): splice(2) moves pages from a TCP socket
// to the agent's unix socket and back without copying them through user
// space. Elsewhere (a real guest's vsock) the plain copies run.

// rawUnix unwraps c to the *net.UnixConn under it (a wrapper offers
// NetConn, as tls.Conn does), or nil.
func rawUnix(c net.Conn) *net.UnixConn {
	for range 4 {
		switch v := c.(type) {
		case *net.UnixConn:
			return v
		case interface{ NetConn() net.Conn }:
			c = v.NetConn()
		default:
			return nil
		}
	}
	return nil
}

// unixBuffer is the socket buffer a tunnel asks for on a unix socket: the
// default (about 200 KiB) holds less than one frame in flight each way.
const unixBuffer = 2 << 20

// growUnixBuffers enlarges the unix socket under c, when there is one.
func growUnixBuffers(c net.Conn) {
	if u := rawUnix(c); u != nil {
		_ = u.SetWriteBuffer(unixBuffer)
		_ = u.SetReadBuffer(unixBuffer)
	}
}

// WriteTo copies the tunnel's bytes to w until the other end's EOF; when
// w is a TCP connection and the tunnel runs over a unix socket, payloads
// are spliced.
func (t *tunnel) WriteTo(w io.Writer) (int64, error) {
	t.rmu.Lock()
	defer t.rmu.Unlock()
	raw := rawUnix(t.Conn)
	rf, splice := w.(*net.TCPConn)
	splice = splice && raw != nil
	var total int64
	for {
		for t.remaining == 0 {
			if t.rEOF {
				return total, nil
			}
			if err := t.readHeader(); err != nil {
				if errors.Is(err, io.EOF) {
					return total, nil
				}
				return total, err
			}
		}
		// Bytes the header read buffered first; the rest of the payload
		// straight from the socket.
		if br, ok := t.r.(*bufio.Reader); ok && br.Buffered() > 0 {
			n, err := io.CopyN(w, br, int64(min(br.Buffered(), t.remaining)))
			total += n
			t.remaining -= int(n)
			if errors.Is(err, io.EOF) {
				return total, errTunnelTruncated
			}
			if err != nil {
				return total, err
			}
			continue
		}
		var src io.Reader = t.r
		if splice {
			src = raw
		}
		var n int64
		var err error
		if splice {
			n, err = rf.ReadFrom(&io.LimitedReader{R: src, N: int64(t.remaining)})
		} else {
			n, err = io.CopyN(w, src, int64(t.remaining))
		}
		total += n
		t.remaining -= int(n)
		if errors.Is(err, io.EOF) {
			return total, errTunnelTruncated
		}
		if err != nil {
			return total, err
		}
		if t.remaining > 0 {
			return total, errTunnelTruncated
		}
	}
}

var errTunnelTruncated = errors.New("tunnel closed mid-frame: " + io.ErrUnexpectedEOF.Error())

// ReadFrom sends r's bytes through the tunnel until r's EOF (it does not
// send the tunnel's EOF: that is CloseWrite). When r is a socket and the
// tunnel runs over a unix socket, payloads are spliced through a pipe.
func (t *tunnel) ReadFrom(r io.Reader) (int64, error) {
	if raw := rawUnix(t.Conn); raw != nil {
		if sc, ok := r.(syscall.Conn); ok {
			if n, handled, err := t.spliceFrom(sc, raw); handled {
				return n, err
			}
		}
	}
	buf := make([]byte, tunnelChunk)
	var total int64
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := t.Write(buf[:n]); werr != nil {
				return total, werr
			}
			total += int64(n)
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// spliceFrom moves up to tunnelChunk bytes at a time from src into a pipe,
// writes the frame header, and moves the pipe's bytes to dst. handled is
// false when nothing was done (src cannot be spliced).
func (t *tunnel) spliceFrom(src syscall.Conn, dst *net.UnixConn) (int64, bool, error) {
	srcRaw, err := src.SyscallConn()
	if err != nil {
		return 0, false, nil
	}
	dstRaw, err := dst.SyscallConn()
	if err != nil {
		return 0, false, nil
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return 0, false, nil
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	capacity := tunnelChunk
	if sz, err := unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, tunnelChunk); err != nil {
		capacity = 64 << 10 // the default pipe size
	} else {
		capacity = min(sz, tunnelChunk)
	}
	const flags = unix.SPLICE_F_MOVE | unix.SPLICE_F_NONBLOCK
	var total int64
	for {
		// The pipe is empty here, so EAGAIN means src has nothing yet. What
		// src has right now goes into one frame (up to the pipe's size):
		// fewer, larger frames wake the other end less often.
		var n int64
		var serr error
		eof := false
		rerr := srcRaw.Read(func(fd uintptr) bool {
			for n < int64(capacity) {
				m, err := unix.Splice(int(fd), nil, p[1], nil, capacity-int(n), flags)
				switch {
				case err == unix.EINTR:
					continue
				case err == unix.EAGAIN:
					return n > 0 // wait for src only when nothing was read
				case err != nil:
					serr = err
					return true
				case m == 0:
					eof = true
					return true
				}
				n += m
			}
			return true
		})
		if rerr != nil {
			return total, true, rerr
		}
		if serr != nil && n == 0 {
			if total == 0 && (serr == unix.EINVAL || serr == unix.ENOSYS || serr == unix.EOPNOTSUPP) {
				return 0, false, nil
			}
			return total, true, &net.OpError{Op: "splice", Net: "tcp", Err: serr}
		}
		if n > 0 {
			if err := t.writeSplicedFrame(dstRaw, p[0], int(n)); err != nil {
				return total, true, err
			}
			total += n
		}
		if eof {
			return total, true, nil
		}
	}
}

// writeSplicedFrame sends a header for n bytes, then the n bytes waiting in
// the pipe.
func (t *tunnel) writeSplicedFrame(dstRaw syscall.RawConn, pipe, n int) error {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	if t.wEOF {
		return errors.New("writing to the tunnel after CloseWrite")
	}
	hdr := []byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
	if _, err := t.Conn.Write(hdr); err != nil {
		return err
	}
	const flags = unix.SPLICE_F_MOVE | unix.SPLICE_F_NONBLOCK
	for left := n; left > 0; {
		var m int64
		var serr error
		werr := dstRaw.Write(func(fd uintptr) bool {
			for {
				// The pipe holds data, so EAGAIN means dst is full.
				m, serr = unix.Splice(pipe, nil, int(fd), nil, left, flags)
				if serr != unix.EINTR {
					return serr != unix.EAGAIN
				}
			}
		})
		if werr != nil {
			return werr
		}
		if serr != nil {
			return &net.OpError{Op: "splice", Net: "unix", Err: serr}
		}
		left -= int(m)
	}
	return nil
}
