package client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// The client speaks just the HTTP/1.1 that bangerd's socket needs: one
// request per connection (a unix-socket connect costs microseconds), a
// reply whose body has a Content-Length, is chunked, or ends at EOF.
// net/http's client side links crypto/tls, x509 and MIME, whose init and
// page faults were an eighth of the front banger's start (DESIGN.md §3).

// response is a reply's status and its body; closing the body closes the
// connection.
type response struct {
	status int
	line   string // the status line, for errors
	length int64  // Content-Length, -1 when unknown
	body   io.ReadCloser
}

// roundTrip sends one request on a new connection and reads the reply's
// header. ctx bounds the whole exchange, body reads included.
func (c *Client) roundTrip(ctx context.Context, method, path string, body []byte) (*response, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.socket)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	// A cancel unblocks any read or write at once.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	fail := func(err error) (*response, error) {
		stop()
		conn.Close()
		return nil, ctxErr(ctx, err)
	}
	req := make([]byte, 0, 128+len(body))
	req = append(req, method...)
	req = append(req, ' ')
	req = append(req, path...)
	req = append(req, " HTTP/1.1\r\nHost: bangerd\r\nUser-Agent: banger\r\nConnection: close\r\n"...)
	if body != nil {
		req = append(req, "Content-Type: application/json\r\nContent-Length: "...)
		req = strconv.AppendInt(req, int64(len(body)), 10)
		req = append(req, "\r\n"...)
	}
	req = append(req, "\r\n"...)
	req = append(req, body...)
	if _, err := conn.Write(req); err != nil {
		return fail(err)
	}
	br := bufio.NewReaderSize(conn, 4096)
	resp, err := readHeader(br)
	if err != nil {
		return fail(err)
	}
	resp.body = &connBody{r: resp.body, conn: conn, stop: stop, ctx: ctx}
	return resp, nil
}

// readHeader reads the status line and headers and sets up the body reader.
func readHeader(br *bufio.Reader) (*response, error) {
	line, err := readLine(br)
	if err != nil {
		return nil, err
	}
	proto, rest, _ := strings.Cut(line, " ")
	code, _, _ := strings.Cut(rest, " ")
	status, err := strconv.Atoi(code)
	if !strings.HasPrefix(proto, "HTTP/1.") || err != nil {
		return nil, fmt.Errorf("malformed HTTP status line %q", line)
	}
	resp := &response{status: status, line: line, length: -1}
	chunked := false
	for {
		h, err := readLine(br)
		if err != nil {
			return nil, unexpected(err)
		}
		if h == "" {
			break
		}
		name, value, ok := strings.Cut(h, ":")
		if !ok {
			return nil, fmt.Errorf("malformed HTTP header %q", h)
		}
		value = strings.TrimSpace(value)
		switch {
		case strings.EqualFold(name, "Content-Length"):
			n, err := strconv.ParseInt(value, 10, 64)
			if err != nil || n < 0 {
				return nil, fmt.Errorf("bad Content-Length %q", value)
			}
			resp.length = n
		case strings.EqualFold(name, "Transfer-Encoding"):
			if !strings.EqualFold(value, "chunked") {
				return nil, fmt.Errorf("unsupported Transfer-Encoding %q", value)
			}
			chunked = true
		}
	}
	switch {
	case status == 204 || status == 304 || status/100 == 1:
		resp.length = 0
		resp.body = io.NopCloser(strings.NewReader(""))
	case chunked:
		resp.length = -1
		resp.body = io.NopCloser(&chunkedReader{r: br})
	case resp.length >= 0:
		resp.body = io.NopCloser(&lengthReader{r: br, n: resp.length})
	default:
		resp.body = io.NopCloser(br) // until the daemon closes
	}
	return resp, nil
}

// readLine reads one CRLF- (or LF-) terminated line without its ending.
func readLine(br *bufio.Reader) (string, error) {
	b, err := br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		return "", errors.New("HTTP header line too long")
	}
	if err != nil {
		return "", err
	}
	b = b[:len(b)-1]
	if len(b) > 0 && b[len(b)-1] == '\r' {
		b = b[:len(b)-1]
	}
	return string(b), nil
}

// unexpected turns an EOF inside a reply into io.ErrUnexpectedEOF.
func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// lengthReader reads exactly n bytes; fewer is io.ErrUnexpectedEOF.
type lengthReader struct {
	r io.Reader
	n int64
}

func (l *lengthReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	if l.n > 0 && err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if l.n == 0 && err == nil {
		err = io.EOF
	}
	return n, err
}

// chunkedReader decodes HTTP/1.1 chunked transfer coding (RFC 9112 §7.1),
// dropping extensions and trailers.
type chunkedReader struct {
	r    *bufio.Reader
	left int64 // bytes left in the current chunk
	done bool
}

func (c *chunkedReader) Read(p []byte) (int, error) {
	if c.done {
		return 0, io.EOF
	}
	if c.left == 0 {
		line, err := readLine(c.r)
		if err != nil {
			return 0, unexpected(err)
		}
		size, _, _ := strings.Cut(line, ";")
		n, err := strconv.ParseInt(strings.TrimSpace(size), 16, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("malformed chunk size %q", line)
		}
		if n == 0 {
			for { // trailers, then the empty line
				t, err := readLine(c.r)
				if err != nil {
					return 0, unexpected(err)
				}
				if t == "" {
					break
				}
			}
			c.done = true
			return 0, io.EOF
		}
		c.left = n
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	if err != nil {
		return n, unexpected(err)
	}
	if c.left == 0 {
		if line, err := readLine(c.r); err != nil || line != "" {
			if err == nil {
				err = errors.New("malformed chunk end")
			}
			return n, unexpected(err)
		}
	}
	return n, nil
}

// connBody is a reply body that owns its connection.
type connBody struct {
	r    io.Reader
	conn net.Conn
	stop func() bool
	ctx  context.Context
}

func (b *connBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		err = ctxErr(b.ctx, err)
	}
	return n, err
}

func (b *connBody) Close() error {
	b.stop()
	return b.conn.Close()
}

// ctxErr reports an I/O error that ctx caused (a cancel, or its deadline,
// which is also the connection's) as ctx's error.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
			return context.DeadlineExceeded
		}
	}
	return err
}
