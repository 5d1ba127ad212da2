package agent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// Zero-copy path of the tunnel, for the hops that carry a forward's bytes
// between processes on one machine (the banger CLI or daemon, and the fake
// Firecracker's agent): splice(2) moves pages from a TCP socket into the
// agent's unix socket without copying them through user space. Elsewhere
// (a real guest's vsock) the plain copies run, as they do out of the
// tunnel (see WriteTo).

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

// WriteTo copies the tunnel's bytes to w until the other end's EOF. It
// copies rather than splices: pages spliced into a TCP socket make its
// local reader (the sink of a forward, on this host) pay more than the
// copy saves. Measured with BenchmarkVMForwardThroughput: the two ends
// used 58-78 ms of CPU per 64 MiB behind a splicing agent against 34-39
// ms behind a copying one, the agent 15-22 ms against 22-29 ms.
//
// It reads as much as the connection has, frames and all, and writes the
// payloads of every frame it holds with one writev: a frame costs no read
// of its own for its header, and frames come at the size the sender's
// socket had ready (often 64 KiB), so this is fewer system calls, which
// are what a hop costs.
func (t *tunnel) WriteTo(w io.Writer) (int64, error) {
	t.rmu.Lock()
	defer t.rmu.Unlock()
	var total int64
	iovs := make([][]byte, 0, 16) // WriteTo consumes iov; refill from here
	buf := t.readBuf()
	start, end := 0, 0 // buf[start:end] is read and not yet consumed
	for {
		iov := net.Buffers(iovs[:0])
		for start < end && !t.rEOF {
			if t.remaining == 0 {
				if end-start < 4 {
					break // the rest of the header is still to come
				}
				n := binary.BigEndian.Uint32(buf[start:])
				start += 4
				if n > maxTunnelFrame {
					return total, fmt.Errorf("tunnel frame of %d bytes is larger than %d", n, maxTunnelFrame)
				}
				if n == 0 {
					t.rEOF = true
					break
				}
				t.remaining = int(n)
				continue
			}
			c := min(end-start, t.remaining)
			iov = append(iov, buf[start:start+c])
			start += c
			t.remaining -= c
		}
		if len(iov) > 0 {
			n, err := iov.WriteTo(w)
			total += n
			if err != nil {
				return total, err
			}
		}
		if t.rEOF {
			return total, nil
		}
		// Keep a partial header; grow the buffer once a read filled it.
		end = copy(buf, buf[start:end])
		start = 0
		if t.grow && len(buf) < tunnelChunk {
			buf = t.readBuf()
		}
		m, err := t.r.Read(buf[end:])
		end += m
		if end == len(buf) {
			t.grow = true // a bulk transfer: read whole frames
		}
		if errors.Is(err, io.EOF) {
			if m > 0 {
				continue // consume what came with it; the next Read says EOF again
			}
			if t.remaining > 0 || end > 0 {
				return total, errTunnelTruncated
			}
			return total, errTunnelAborted
		}
		if err != nil {
			return total, err
		}
	}
}

// readBuf is WriteTo's buffer: plainChunk, or a whole frame (tunnelChunk)
// once a read has filled the small one. Most tunnels stay small (a guest
// may hold a hundred open); a bulk one reads whole frames at a time.
func (t *tunnel) readBuf() []byte {
	if t.grow && len(t.rbuf) < tunnelChunk {
		old := t.rbuf
		t.rbuf = make([]byte, tunnelChunk)
		copy(t.rbuf, old)
	}
	return plainBuf(&t.rbuf)
}

var (
	errTunnelTruncated = fmt.Errorf("tunnel closed mid-frame: %w", io.ErrUnexpectedEOF)
	// errTunnelAborted: closed between frames without an EOF frame, an
	// abort rather than a clean end.
	errTunnelAborted = fmt.Errorf("tunnel closed by the other end: %w", io.ErrUnexpectedEOF)
)

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
	// Read straight behind a header slot: one write per frame, no copy.
	t.wmu.Lock()
	buf := plainBuf(&t.wplain)
	t.wmu.Unlock()
	var total int64
	for {
		n, err := r.Read(buf[4:])
		if n > 0 {
			if werr := t.writeFrame(buf, n); werr != nil {
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

// writeFrame sends buf[:4+n], a frame whose payload is already at buf[4:].
func (t *tunnel) writeFrame(buf []byte, n int) error {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	if t.wEOF {
		return errors.New("writing to the tunnel after CloseWrite")
	}
	buf[0], buf[1], buf[2], buf[3] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
	_, err := t.Conn.Write(buf[:4+n])
	return err
}

// spliceFrom sends what src holds at a time (up to the pipe's size) as one
// frame. The frame's header goes into the pipe ahead of the payload spliced
// in behind it, so header and payload reach dst in one splice and the
// reader at the other end wakes once per frame: a header written to dst on
// its own woke the agent for it and again for the payload (1.6 reads and
// waits per frame, counted with perf stat in BenchmarkVMForwardThroughput).
// handled is false when nothing was done (src cannot be spliced).
func (t *tunnel) spliceFrom(src syscall.Conn, dst *net.UnixConn) (int64, bool, error) {
	srcRaw, err := src.SyscallConn()
	if err != nil {
		return 0, false, nil
	}
	dstRaw, err := dst.SyscallConn()
	if err != nil {
		return 0, false, nil
	}
	pipe, err := newSplicePipe()
	if err != nil {
		return 0, false, nil
	}
	defer pipe.close()
	var total int64
	full := 0 // frames in a row that filled the pipe
	for {
		avail, eof, err := queued(srcRaw)
		if err != nil {
			return total, true, err
		}
		if eof {
			return total, true, nil
		}
		// The header takes a slot of the pipe's own.
		n := min(avail, pipe.size-pipeSlot)
		if err := t.spliceFrame(srcRaw, dstRaw, pipe, n); err != nil {
			if total == 0 && errors.Is(err, errNoSplice) {
				return 0, false, nil // nothing reached dst; src is unread
			}
			return total, true, err
		}
		total += int64(n)
		if n == pipe.size-pipeSlot {
			full++
		} else {
			full = 0
		}
		if full == bulkFrames && pipe.size < maxTunnelFrame {
			pipe.resize(maxTunnelFrame) // between frames the pipe is empty
		}
	}
}

// pipeSlot is what one buffer of a pipe holds at most (a page).
const pipeSlot = 4096

// queued waits until src has bytes queued and says how many, or that src
// is at EOF.
func queued(src syscall.RawConn) (n int, eof bool, err error) {
	var serr error
	rerr := src.Read(func(fd uintptr) bool {
		for {
			n, serr = unix.IoctlGetInt(int(fd), unix.SIOCINQ)
			if serr != nil || n > 0 {
				return true
			}
			// Nothing queued: EOF, an error, or wait.
			var b [1]byte
			m, _, perr := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
			switch {
			case perr == unix.EINTR:
			case perr == unix.EAGAIN:
				return false
			case perr != nil:
				serr = perr
				return true
			case m == 0:
				eof = true
				return true
			}
			// Bytes came between the two calls: count them.
		}
	})
	if rerr != nil {
		return 0, false, rerr
	}
	if serr != nil {
		return 0, false, &net.OpError{Op: "read", Err: serr}
	}
	return n, eof, nil
}

// spliceFrame writes a header for n bytes into the (empty) pipe, splices
// n bytes of src (which holds at least that many) in behind it and moves
// it all to dst, draining early only when the pipe fills up (src's pages
// may be smaller than the pipe's slots).
func (t *tunnel) spliceFrame(srcRaw, dstRaw syscall.RawConn, pipe *splicePipe, n int) error {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	if t.wEOF {
		return errors.New("writing to the tunnel after CloseWrite")
	}
	hdr := [4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
	if _, err := unix.Write(pipe.w, hdr[:]); err != nil {
		return &net.OpError{Op: "write", Err: err}
	}
	inPipe := len(hdr)
	for left := n; left > 0; {
		m, err := pipe.take(srcRaw, left, inPipe == 0)
		if err != nil {
			return err
		}
		if m == 0 { // the pipe is full
			if err := pipe.drain(dstRaw, inPipe); err != nil {
				return err
			}
			inPipe = 0
			continue
		}
		left -= m
		inPipe += m
	}
	return pipe.drain(dstRaw, inPipe)
}

// errNoSplice: the socket cannot be spliced (nothing was moved).
var errNoSplice = errors.New("splice not supported")

// splicePipe is a pipe that bytes pass through between two sockets.
type splicePipe struct {
	r, w int
	size int
}

func newSplicePipe() (*splicePipe, error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, err
	}
	sp := &splicePipe{r: p[0], w: p[1]}
	sp.resize(tunnelChunk)
	return sp, nil
}

// resize asks for a pipe of want bytes and records the size it has: a
// user over the kernel's pipe quota (fs/pipe-user-pages-soft) gets less.
func (p *splicePipe) resize(want int) {
	if sz, err := unix.FcntlInt(uintptr(p.w), unix.F_SETPIPE_SZ, want); err == nil {
		p.size = min(sz, maxTunnelFrame)
		return
	}
	if sz, err := unix.FcntlInt(uintptr(p.w), unix.F_GETPIPE_SZ, 0); err == nil {
		p.size = min(sz, maxTunnelFrame)
	}
}

// bulkFrames is how many frames in a row that fill the pipe make a
// transfer bulk: its pipe then grows to a whole frame. A bulk transfer's
// sender is ahead of us, and bigger frames cost fewer system calls and
// wake-ups per byte at both ends; most tunnels never get there and keep
// their quarter of the pipe quota.
const bulkFrames = 4

func (p *splicePipe) close() {
	unix.Close(p.r)
	unix.Close(p.w)
}

const spliceFlags = unix.SPLICE_F_MOVE | unix.SPLICE_F_NONBLOCK

// take splices up to max bytes of src into the pipe with one call: 0 when
// the pipe is full, or, when wait is set (the pipe is empty, so src is),
// after waiting for src. src at EOF is an error: take is only asked for
// bytes src said it holds.
func (p *splicePipe) take(src syscall.RawConn, max int, wait bool) (int, error) {
	var m int64
	var serr error
	rerr := src.Read(func(fd uintptr) bool {
		for {
			m, serr = unix.Splice(int(fd), nil, p.w, nil, max, spliceFlags)
			switch {
			case serr == unix.EINTR:
				continue
			case serr == unix.EAGAIN:
				m, serr = 0, nil
				return !wait
			}
			return true
		}
	})
	switch {
	case rerr != nil:
		return 0, rerr
	case serr == unix.EINVAL || serr == unix.ENOSYS || serr == unix.EOPNOTSUPP:
		return 0, errNoSplice
	case serr != nil:
		return 0, &net.OpError{Op: "splice", Err: serr}
	case m == 0 && wait:
		return 0, fmt.Errorf("splicing into the tunnel: %w", io.ErrUnexpectedEOF)
	}
	return int(m), nil
}

// drain moves the n bytes in the pipe to dst.
func (p *splicePipe) drain(dst syscall.RawConn, n int) error {
	for left := n; left > 0; {
		var m int64
		var serr error
		werr := dst.Write(func(fd uintptr) bool {
			for {
				// The pipe holds data, so EAGAIN means dst is full.
				m, serr = unix.Splice(p.r, nil, int(fd), nil, left, spliceFlags)
				if serr != unix.EINTR {
					return serr != unix.EAGAIN
				}
			}
		})
		if werr != nil {
			return werr
		}
		if serr != nil {
			return &net.OpError{Op: "splice", Err: serr}
		}
		left -= int(m)
	}
	return nil
}
