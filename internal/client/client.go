// Package client is the typed client for bangerd's unix socket.
package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"syscall"
	"time"

	"banger/internal/api"
)

// ErrNoDaemon means nothing answers on the socket.
var ErrNoDaemon = errors.New("bangerd is not running")

// Client calls the daemon.
type Client struct {
	socket string
	http   *http.Client
	nextID atomic.Int64
}

// New returns a client for the daemon socket at path.
func New(socket string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		MaxIdleConns:        4,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     30 * time.Second,
	}
	return &Client{socket: socket, http: &http.Client{Transport: tr}}
}

// Socket is the socket path this client dials.
func (c *Client) Socket() string { return c.socket }

// Call invokes method with params and decodes the result into out (may be
// nil). An RPC error comes back as *api.Error; a dial failure wraps
// ErrNoDaemon.
func (c *Client) Call(ctx context.Context, method string, params, out any) error {
	var raw json.RawMessage
	if params != nil {
		b, err := json.Marshal(params)
		if err != nil {
			return fmt.Errorf("encoding %s params: %w", method, err)
		}
		raw = b
	}
	id := c.nextID.Add(1)
	body, err := json.Marshal(api.Request{JSONRPC: "2.0", ID: json.RawMessage(fmt.Sprint(id)), Method: method, Params: raw})
	if err != nil {
		return fmt.Errorf("encoding %s request: %w", method, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://bangerd"+api.PathRPC, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("building %s request: %w", method, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		if isDialError(err) {
			return fmt.Errorf("%w (no answer on %s)", ErrNoDaemon, c.socket)
		}
		if dropped(err) {
			return fmt.Errorf("%w: the connection closed while %s ran (the daemon stopped or died); `banger daemon status` says whether it runs, its log why", ErrDropped, method)
		}
		return fmt.Errorf("calling %s: %w", method, err)
	}
	defer resp.Body.Close()
	var r api.Response
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&r); err != nil {
		return fmt.Errorf("reading %s reply: %w", method, err)
	}
	if r.Error != nil {
		return r.Error
	}
	if out != nil && len(r.Result) > 0 {
		if err := json.Unmarshal(r.Result, out); err != nil {
			return fmt.Errorf("decoding %s result: %w", method, err)
		}
	}
	return nil
}

// Ping reports whether a daemon answers daemon.status within ctx.
func (c *Client) Ping(ctx context.Context) (api.DaemonStatus, error) {
	var st api.DaemonStatus
	err := c.Call(ctx, api.MethodDaemonStatus, nil, &st)
	// A daemon killed a moment ago can still hold its socket while its
	// threads exit: the connect succeeds and the request is dropped. For a
	// status probe that is no daemon, not a failure.
	if errors.Is(err, ErrDropped) {
		return st, fmt.Errorf("%w (the connection to %s was dropped)", ErrNoDaemon, c.socket)
	}
	return st, err
}

// Events streams the daemon's events until ctx ends. The channel closes when
// the stream ends; the error func reports why.
func (c *Client) Events(ctx context.Context) (<-chan api.Event, func() error, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://bangerd"+api.PathEvents, nil)
	if err != nil {
		return nil, nil, err
	}
	tr := c.http.Transport
	hc := &http.Client{Transport: tr}
	resp, err := hc.Do(req)
	if err != nil {
		if isDialError(err) {
			return nil, nil, fmt.Errorf("%w (no answer on %s)", ErrNoDaemon, c.socket)
		}
		return nil, nil, fmt.Errorf("opening event stream: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, nil, fmt.Errorf("opening event stream: %s", resp.Status)
	}
	ch := make(chan api.Event, 64)
	var streamErr atomic.Value
	go func() {
		defer close(ch)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
		for sc.Scan() {
			line := bytes.TrimSpace(sc.Bytes())
			if len(line) == 0 {
				continue
			}
			var ev api.Event
			if err := json.Unmarshal(line, &ev); err != nil {
				continue
			}
			select {
			case ch <- ev:
			case <-ctx.Done():
				return
			}
		}
		if err := sc.Err(); err != nil && ctx.Err() == nil {
			streamErr.Store(err)
		}
	}()
	return ch, func() error {
		if e, ok := streamErr.Load().(error); ok {
			return e
		}
		return nil
	}, nil
}

// ErrDropped: the daemon accepted the request and closed the connection
// without an answer (it stopped or died meanwhile).
var ErrDropped = errors.New("no answer from bangerd")

// dropped reports a connection closed or reset before any reply.
func dropped(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

func isDialError(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	return false
}
