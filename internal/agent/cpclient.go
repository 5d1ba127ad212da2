package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// PathCopy is the copy endpoint: GET streams a tar out of the guest, PUT
// extracts one into it.
const PathCopy = "/v1/cp"

// CopyErrorTrailer is the HTTP trailer of GET /v1/cp that carries a
// failure after the tar stream started (the stream is then incomplete).
const CopyErrorTrailer = "Banger-Cp-Error"

// CopyResult is the body of a successful PUT /v1/cp.
type CopyResult struct {
	Bytes int64 `json:"bytes"`
}

// CopyError is the agent's refusal or failure of a copy; Status is the
// HTTP status (404 no such path, 400 a refusal, 5xx a failure).
type CopyError struct {
	Status int
	Msg    string
}

func (e *CopyError) Error() string { return e.Msg }

// ErrCopyUnsupported: the agent has no /v1/cp (it predates protocol 2).
var ErrCopyUnsupported = errors.New("the guest agent does not support cp")

// CopyClient copies to and from an agent over connections from dial.
type CopyClient struct {
	hc *http.Client
}

// NewCopyClient returns a CopyClient dialing with dial.
func NewCopyClient(dial func(ctx context.Context) (net.Conn, error)) *CopyClient {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dial(ctx)
		},
		DisableKeepAlives:  true,
		DisableCompression: true,
		// The agent checks a PUT's destination before the body is sent.
		ExpectContinueTimeout: 30 * time.Second,
		WriteBufferSize:       256 << 10,
		ReadBufferSize:        256 << 10,
	}
	return &CopyClient{hc: &http.Client{Transport: tr}}
}

// CopyOut is a tar stream out of the guest. Read it to EOF, then Close,
// which reports a failure the agent met after the stream started.
type CopyOut struct {
	resp *http.Response
}

func (c *CopyOut) Read(p []byte) (int, error) { return c.resp.Body.Read(p) }

// Close drains the stream (so its trailer arrives) and returns the agent's
// failure, if any.
func (c *CopyOut) Close() error {
	_, err := io.Copy(io.Discard, io.LimitReader(c.resp.Body, 64<<20))
	c.resp.Body.Close()
	if msg := c.resp.Trailer.Get(CopyErrorTrailer); msg != "" {
		return &CopyError{Status: http.StatusInternalServerError, Msg: msg}
	}
	if err != nil {
		return fmt.Errorf("reading the tar stream from the agent: %w", err)
	}
	return nil
}

// Abort ends the stream without reading the rest.
func (c *CopyOut) Abort() { c.resp.Body.Close() }

// Out starts a tar of the guest's path (absolute).
func (c *CopyClient) Out(ctx context.Context, path string) (*CopyOut, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://agent"+PathCopy+"?"+url.Values{"path": {path}}.Encode(), nil)
	if err != nil {
		return nil, fmt.Errorf("building cp request: %w", err)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("asking the agent for %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, copyFailure(resp)
	}
	return &CopyOut{resp: resp}, nil
}

// CopyIn says where PUT /v1/cp extracts: Path with docker cp's rules for
// a source called Name (a directory when Dir), or with Raw straight into
// the existing directory Path.
type CopyIn struct {
	Path string
	Name string
	Dir  bool
	Raw  bool
}

// In sends the tar on body to the guest and returns the content bytes the
// agent wrote.
func (c *CopyClient) In(ctx context.Context, in CopyIn, body io.Reader) (int64, error) {
	q := url.Values{"path": {in.Path}}
	if in.Raw {
		q.Set("raw", "1")
	} else {
		q.Set("name", in.Name)
		q.Set("dir", strconv.Itoa(map[bool]int{false: 0, true: 1}[in.Dir]))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, "http://agent"+PathCopy+"?"+q.Encode(), io.NopCloser(body))
	if err != nil {
		return 0, fmt.Errorf("building cp request: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-tar")
	req.Header.Set("Expect", "100-continue")
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("sending to the agent: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, copyFailure(resp)
	}
	var res CopyResult
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxBody)).Decode(&res); err != nil {
		return 0, fmt.Errorf("decoding the agent's cp answer: %w", err)
	}
	return res.Bytes, nil
}

// copyFailure turns a non-200 answer into a CopyError (or
// ErrCopyUnsupported from an agent without the endpoint).
func copyFailure(resp *http.Response) error {
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	var eb errorBody
	if json.Unmarshal(raw, &eb) == nil && eb.Error != "" {
		return &CopyError{Status: resp.StatusCode, Msg: eb.Error}
	}
	if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed {
		return ErrCopyUnsupported
	}
	msg := strings.TrimSpace(string(raw))
	if len(msg) > 200 {
		msg = msg[:200] + "..."
	}
	return &CopyError{Status: resp.StatusCode, Msg: fmt.Sprintf("agent %s answered %s: %s", PathCopy, resp.Status, msg)}
}
