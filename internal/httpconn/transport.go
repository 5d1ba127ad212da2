// Package httpconn is an http.RoundTripper for daemons that talk to many
// small local HTTP servers (Firecracker's API socket, the guest agents over
// vsock): each request goes out on a connection of its own, and the answer
// is read on the caller's goroutine.
//
// net/http's Transport starts three goroutines for every connection it
// dials (the dial, a read loop and a write loop) and gives each a 4 KiB
// buffer both ways, even with keep-alives off. With 500 running VMs the
// daemon's forward poll made 46,000 such connections over the 500-VM
// benchmark, and the
// goroutines and buffers they held at once set how far the daemon's heap
// and the runtime's records grew (docs/design.md §4 "Memory after a
// burst"). Here a request costs its connection, one read buffer and, for a
// context that can end, a registered callback.
package httpconn

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

// Transport sends each request on a fresh connection from Dial, asking the
// server to close it after the answer ("Connection: close"), and closes it
// when the answer's body is closed. The request's context bounds the whole
// exchange, the body's reading included. A Transport is safe for
// concurrent use.
type Transport struct {
	// Dial opens the connection for one request.
	Dial func(ctx context.Context) (net.Conn, error)
	// HeaderTimeout, when non-zero, bounds the wait for the answer's
	// header once the request has been written.
	HeaderTimeout time.Duration
}

// past is a deadline that has passed: setting it ends blocked reads and
// writes at once.
var past = time.Unix(1, 0)

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	if err := ctx.Err(); err != nil {
		closeBody(req)
		return nil, err
	}
	conn, err := t.Dial(ctx)
	if err != nil {
		closeBody(req)
		if cerr := ctxErr(ctx, err); cerr != nil {
			return nil, cerr
		}
		return nil, err
	}
	deadline, hasDeadline := ctx.Deadline()
	if hasDeadline {
		_ = conn.SetDeadline(deadline) // also the body's, read later
	}
	// A context that ends mid-exchange ends the blocked read or write; the
	// callback runs only then (registering it starts no goroutine).
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(past) })
	fail := func(doing string, err error) (*http.Response, error) {
		stop()
		_ = conn.Close()
		if cerr := ctxErr(ctx, err); cerr != nil {
			return nil, cerr
		}
		return nil, fmt.Errorf("%s: %w", doing, err)
	}

	out := *req // a shallow copy: a RoundTripper must not change the request
	out.Close = true
	if err := out.Write(conn); err != nil { // closes the request's body
		return fail("writing the request", err)
	}
	if t.HeaderTimeout > 0 {
		hd := time.Now().Add(t.HeaderTimeout)
		if hasDeadline && deadline.Before(hd) {
			hd = deadline
		}
		_ = conn.SetReadDeadline(hd)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		if t.HeaderTimeout > 0 && errors.Is(err, os.ErrDeadlineExceeded) && ctxErr(ctx, err) == nil {
			err = fmt.Errorf("no answer within %s of the request", t.HeaderTimeout)
		}
		return fail("reading the answer", err)
	}
	if t.HeaderTimeout > 0 {
		var rd time.Time // none, unless the context has one
		if hasDeadline {
			rd = deadline
		}
		_ = conn.SetReadDeadline(rd)
	}
	resp.Body = &body{rc: resp.Body, conn: conn, stop: stop, ctx: ctx}
	return resp, nil
}

// ctxErr is the context's error when err came from the context ending
// (its deadline passing shows as the connection's deadline passing), and
// nil otherwise.
func ctxErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	if dl, ok := ctx.Deadline(); ok && errors.Is(err, os.ErrDeadlineExceeded) && !time.Now().Before(dl) {
		return context.DeadlineExceeded
	}
	return nil
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}

// body is an answer's body; closing it closes the connection.
type body struct {
	rc   io.ReadCloser
	conn net.Conn
	stop func() bool
	ctx  context.Context
}

func (b *body) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err != nil && err != io.EOF {
		if cerr := ctxErr(b.ctx, err); cerr != nil {
			return n, cerr
		}
	}
	return n, err
}

func (b *body) Close() error {
	b.stop()
	_ = b.conn.Close()
	return b.rc.Close() // later reads say the body is closed
}
