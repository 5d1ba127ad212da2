// Package forward is the host side of a port forward: a TCP listener whose
// every accepted connection is joined, byte for byte and with half-close, to
// a connection a Dialer makes (through the guest agent, for banger). It knows
// nothing of VMs or the daemon.
package forward

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// Dialer dials the far end of one forwarded connection (the guest port).
type Dialer func(ctx context.Context) (net.Conn, error)

// dialTimeout bounds one Dialer call.
const dialTimeout = 10 * time.Second

// Forward is a listening forward. Its zero value is not usable; see Listen.
type Forward struct {
	l    *net.TCPListener
	dial Dialer
	log  *slog.Logger

	ctx    context.Context // ends when the forward is closed
	cancel context.CancelFunc

	mu     sync.Mutex
	conns  map[net.Conn]struct{} // accepted and dialled ends, closed by Close
	active int
	closed bool

	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// Listen listens on hostAddr ("127.0.0.1:8080", "127.0.0.1:0", "[::1]:80";
// an empty host is every address, so callers name one) and forwards every
// accepted connection to a fresh connection from dial until Close or ctx
// ends. A port that is taken gives an error matching syscall.EADDRINUSE.
func Listen(ctx context.Context, hostAddr string, dial Dialer, log *slog.Logger) (*Forward, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp", hostAddr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", hostAddr, err)
	}
	fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	f := &Forward{
		l:      l.(*net.TCPListener),
		dial:   dial,
		log:    log.With("listen", l.Addr().String()),
		ctx:    fctx,
		cancel: cancel,
		conns:  map[net.Conn]struct{}{},
	}
	stop := context.AfterFunc(ctx, func() { f.Close() })
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		defer stop()
		f.acceptLoop()
	}()
	return f, nil
}

// Addr is the address the forward listens on (with the port picked for ":0").
func (f *Forward) Addr() *net.TCPAddr { return f.l.Addr().(*net.TCPAddr) }

// Conns is the number of connections being forwarded now.
func (f *Forward) Conns() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.active
}

// Done is closed once the forward has been closed (by Close or its context)
// and every connection has ended.
func (f *Forward) Done() <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		<-f.ctx.Done()
		f.wg.Wait()
		close(ch)
	}()
	return ch
}

// Close stops listening, ends every forwarded connection and waits for the
// forward's goroutines. It is safe to call more than once.
func (f *Forward) Close() error {
	f.closeOnce.Do(func() {
		f.mu.Lock()
		f.closed = true
		f.closeErr = f.l.Close()
		for c := range f.conns {
			c.Close()
		}
		f.mu.Unlock()
		f.cancel()
	})
	f.wg.Wait()
	return f.closeErr
}

func (f *Forward) acceptLoop() {
	for {
		c, err := f.l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			// EMFILE and friends: back off instead of spinning.
			f.log.Warn("forward: accepting a connection", "err", err)
			select {
			case <-time.After(100 * time.Millisecond):
			case <-f.ctx.Done():
				return
			}
			continue
		}
		if !f.track(c) {
			c.Close()
			return
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			f.serve(c)
		}()
	}
}

// track registers c for Close; false when the forward is already closed.
func (f *Forward) track(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	f.conns[c] = struct{}{}
	return true
}

func (f *Forward) untrack(c net.Conn) {
	f.mu.Lock()
	delete(f.conns, c)
	f.mu.Unlock()
	c.Close()
}

func (f *Forward) serve(c net.Conn) {
	defer f.untrack(c)
	f.mu.Lock()
	f.active++
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.active--
		f.mu.Unlock()
	}()
	dctx, cancel := context.WithTimeout(f.ctx, dialTimeout)
	far, err := f.dial(dctx)
	cancel()
	if err != nil {
		if f.ctx.Err() == nil {
			f.log.Warn("forward: dialling the far end; closing the connection", "client", c.RemoteAddr().String(), "err", err)
		}
		return
	}
	if !f.track(far) {
		far.Close()
		return
	}
	defer f.untrack(far)
	if err := Join(c, far); err != nil && f.ctx.Err() == nil {
		f.log.Debug("forward: connection ended with an error", "client", c.RemoteAddr().String(), "err", err)
	}
}

// copyBuf is the buffer of one direction of a joined pair: large, so a
// bulk transfer costs few syscalls on each side.
const copyBuf = 256 << 10

var bufPool = sync.Pool{New: func() any { return new([copyBuf]byte) }}

// copyConn copies src to dst until src's EOF, with a large buffer (io.Copy
// would hand TCP connections to their 32 KiB ReadFrom/WriteTo paths).
//
// A connection other than a plain TCP one may bring its own faster path
// (the agent's tunnel splices): src's WriterTo or dst's ReaderFrom is used
// then. Those must not send an EOF themselves (Join half-closes).
func copyConn(dst io.Writer, src io.Reader) error {
	if wt, ok := src.(io.WriterTo); ok && !isTCP(src) {
		_, err := wt.WriteTo(dst)
		return err
	}
	if rf, ok := dst.(io.ReaderFrom); ok && !isTCP(dst) {
		_, err := rf.ReadFrom(src)
		return err
	}
	buf := bufPool.Get().(*[copyBuf]byte)
	defer bufPool.Put(buf)
	for {
		n, err := src.Read(buf[:])
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func isTCP(x any) bool {
	_, ok := x.(*net.TCPConn)
	return ok
}

// closeWriter is a connection that can end its write side alone.
type closeWriter interface{ CloseWrite() error }

// Join copies a to b and b to a until both directions have ended. When one
// side's reader reaches EOF the other side's writer is half-closed (when it
// has CloseWrite; otherwise the connection is closed); an error in either
// direction closes both at once. Both are closed on return. The error is
// the first copy error, nil for two clean EOFs.
func Join(a, b net.Conn) error {
	errc := make(chan error, 2)
	half := func(dst, src net.Conn) {
		err := copyConn(dst, src)
		if err != nil {
			// Abort: the other direction cannot go on meaningfully.
			a.Close()
			b.Close()
			errc <- err
			return
		}
		if cw, ok := dst.(closeWriter); ok {
			if err := cw.CloseWrite(); err != nil {
				a.Close()
				b.Close()
				errc <- err
				return
			}
		} else {
			dst.Close()
		}
		errc <- nil
	}
	go half(b, a)
	go half(a, b)
	err1 := <-errc
	err2 := <-errc
	a.Close()
	b.Close()
	if err1 != nil {
		return err1
	}
	return err2
}
