package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"

	"banger/internal/httpconn"
)

// maxBody bounds how much of an agent answer the client reads.
const maxBody = 1 << 20

// Client asks a guest agent over connections made by a dial function (the
// daemon's does Firecracker's CONNECT/OK handshake on the VM's vsock UDS).
// Every request uses a fresh connection.
type Client struct {
	hc *http.Client
}

// NewClient returns a Client whose requests run over connections from dial.
func NewClient(dial func(ctx context.Context) (net.Conn, error)) *Client {
	tr := &httpconn.Transport{Dial: dial, HeaderTimeout: 30 * time.Second}
	return &Client{hc: &http.Client{Transport: tr}}
}

// Health calls GET /healthz and returns the answer and the round-trip time
// (dial included). A status other than 200, a body that is not a Healthz, or
// a status field other than "ok" is an error.
func (c *Client) Health(ctx context.Context) (Healthz, time.Duration, error) {
	var h Healthz
	start := time.Now()
	if err := c.get(ctx, "/healthz", &h); err != nil {
		return Healthz{}, 0, err
	}
	rtt := time.Since(start)
	if h.Status != "ok" {
		return Healthz{}, rtt, fmt.Errorf("agent /healthz: status is %q, want \"ok\"", h.Status)
	}
	return h, rtt, nil
}

// Info calls GET /v1/info.
func (c *Client) Info(ctx context.Context) (Info, error) {
	var info Info
	if err := c.get(ctx, "/v1/info", &info); err != nil {
		return Info{}, err
	}
	return info, nil
}

func (c *Client) get(ctx context.Context, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://agent"+path, nil)
	if err != nil {
		return fmt.Errorf("building agent request %s: %w", path, err)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("calling agent %s: %w", path, unwrapURLError(err))
	}
	defer resp.Body.Close()
	return decodeAnswer(resp, path, out)
}

// unwrapURLError drops net/http's `Get "http://agent/healthz":` prefix, which
// names a URL that does not exist on the wire.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
