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
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	"banger/internal/api"
)

// ErrNoDaemon means nothing answers on the socket.
var ErrNoDaemon = errors.New("bangerd is not running")

// Client calls the daemon.
type Client struct {
	socket string
	nextID atomic.Int64
}

// New returns a client for the daemon socket at path (it dials per call,
// see http1.go).
func New(socket string) *Client {
	return &Client{socket: socket}
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
	body, err := requestBody(c.nextID.Add(1), method, raw)
	if err != nil {
		return fmt.Errorf("encoding %s request: %w", method, err)
	}
	resp, err := c.roundTrip(ctx, "POST", api.PathRPC, body)
	if err != nil {
		if isDialError(err) {
			return fmt.Errorf("%w (no answer on %s)", ErrNoDaemon, c.socket)
		}
		if dropped(err) {
			return fmt.Errorf("%w: the connection closed while %s ran (the daemon stopped or died); `banger daemon status` says whether it runs, its log why", ErrDropped, method)
		}
		return fmt.Errorf("calling %s: %w", method, err)
	}
	defer resp.body.Close()
	data, err := readBody(resp.body, resp.length)
	if err != nil {
		return fmt.Errorf("reading %s reply: %w", method, err)
	}
	return decodeReply(method, data, out)
}

// requestBody is json.Marshal(api.Request{...}) written out: the first
// Marshal of a struct type walks its fields by reflection, a tenth of `vm
// list`'s instructions. params is already compact JSON (a Marshal result).
func requestBody(id int64, method string, params json.RawMessage) ([]byte, error) {
	b := make([]byte, 0, 48+len(method)+len(params))
	b = append(b, `{"jsonrpc":"2.0","id":`...)
	b = strconv.AppendInt(b, id, 10)
	b = append(b, `,"method":`...)
	if plainString(method) {
		b = append(b, '"')
		b = append(b, method...)
		b = append(b, '"')
	} else {
		m, err := json.Marshal(method)
		if err != nil {
			return nil, err
		}
		b = append(b, m...)
	}
	if len(params) > 0 {
		b = append(b, `,"params":`...)
		b = append(b, params...)
	}
	return append(b, '}'), nil
}

// plainString reports a string that JSON encodes as itself in quotes
// (method names: letters, digits, '.', '_', '-').
func plainString(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// maxReply is the largest reply the client reads.
const maxReply = 64 << 20

// readBody reads a reply of at most maxReply bytes into one buffer. With
// the length known the buffer is exactly that big; the daemon streams
// (chunked) its larger replies though, so without it the buffer starts at
// 1 MiB and doubles. Neither is ever zeroed: bytes.Buffer's growth
// (append of a make) clears every new buffer in full, and with `vm list`'s
// 270 KB for 500 VMs its 64 K, 128 K, 256 K, 512 K steps cleared 960 KB, a
// fifth of the command's page faults. A fresh process's large allocation
// comes straight from the OS, so capacity that is never read into is never
// touched.
func readBody(r io.Reader, length int64) ([]byte, error) {
	n := int64(1 << 20)
	if length >= 0 && length < maxReply {
		n = length + 1 // +1: the read that sees EOF needs room
	}
	buf := make([]byte, 0, n)
	for {
		if len(buf) == cap(buf) {
			if len(buf) >= maxReply {
				return nil, fmt.Errorf("reply is larger than %d MiB", maxReply>>20)
			}
			grown := make([]byte, len(buf), 2*cap(buf))
			copy(grown, buf)
			buf = grown
		}
		m, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// decodeReply decodes a JSON-RPC reply in one pass, the result straight
// into out (a RawMessage in between cost a copy and two more scans: most of
// `vm list`'s time with hundreds of VMs).
func decodeReply(method string, body []byte, out any) error {
	rpcErr, err := walkReply(body, out)
	if errors.Is(err, errSlow) {
		return decodeReplySlow(method, body, out)
	}
	if rpcErr != nil && !isNull(rpcErr) {
		var e api.Error
		if err := json.Unmarshal(rpcErr, &e); err != nil {
			return fmt.Errorf("reading %s reply: %w", method, err)
		}
		return &e
	}
	if err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return fmt.Errorf("decoding %s result: %w", method, err)
		}
		return fmt.Errorf("reading %s reply: %w", method, err)
	}
	return nil
}

// walkReply decodes the reply's result into out (when not nil) and returns
// its error member.
func walkReply(data []byte, out any) (rpcErr []byte, err error) {
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '{' {
		return nil, errSlow
	}
	i = skipSpace(data, i+1)
	if i < len(data) && data[i] == '}' {
		return nil, nil
	}
	for {
		if i >= len(data) || data[i] != '"' {
			return nil, &syntaxError{"want a key", i}
		}
		kend, err := skipString(data, i)
		if err != nil {
			return nil, err
		}
		key := string(data[i+1 : kend-1])
		i = skipSpace(data, kend)
		if i >= len(data) || data[i] != ':' {
			return nil, &syntaxError{"want :", i}
		}
		i = skipSpace(data, i+1)
		var end int
		switch {
		case key == "result" && out != nil && !isNullAt(data, i):
			end, err = decodeInto(data, i, out)
		case key == "error":
			end, err = skipValue(data, i)
			if err == nil {
				rpcErr = data[i:end]
			}
		case key != "result" && (strings.EqualFold(key, "result") || strings.EqualFold(key, "error") || strings.IndexByte(key, '\\') >= 0):
			return nil, errSlow
		default:
			end, err = skipValue(data, i)
		}
		if err != nil {
			return rpcErr, err
		}
		i = skipSpace(data, end)
		if i >= len(data) {
			return rpcErr, &syntaxError{"unterminated reply", i}
		}
		if data[i] == '}' {
			return rpcErr, nil
		}
		if data[i] != ',' {
			return rpcErr, &syntaxError{"want , or } in reply", i}
		}
		i = skipSpace(data, i+1)
	}
}

// decodeReplySlow is encoding/json over the whole reply, for anything
// splitReply does not take.
func decodeReplySlow(method string, body []byte, out any) error {
	var discard json.RawMessage
	r := reply{Result: out}
	if out == nil {
		r.Result = &discard
	}
	if err := json.Unmarshal(body, &r); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && r.Error == nil {
			return fmt.Errorf("decoding %s result: %w", method, err)
		}
		if r.Error == nil {
			return fmt.Errorf("reading %s reply: %w", method, err)
		}
	}
	if r.Error != nil {
		return r.Error
	}
	return nil
}

// reply is api.Response with the result decoded in place.
type reply struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Result  any             `json:"result,omitempty"`
	Error   *api.Error      `json:"error,omitempty"`
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
	resp, err := c.roundTrip(ctx, "GET", api.PathEvents, nil)
	if err != nil {
		if isDialError(err) {
			return nil, nil, fmt.Errorf("%w (no answer on %s)", ErrNoDaemon, c.socket)
		}
		return nil, nil, fmt.Errorf("opening event stream: %w", err)
	}
	if resp.status != 200 {
		resp.body.Close()
		return nil, nil, fmt.Errorf("opening event stream: %s", resp.line)
	}
	ch := make(chan api.Event, 64)
	var streamErr atomic.Value
	go func() {
		defer close(ch)
		defer resp.body.Close()
		sc := bufio.NewScanner(resp.body)
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
