package firecracker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"

	"banger/internal/httpconn"
)

// maxResponseBody bounds what the client reads from a Firecracker response.
const maxResponseBody = 1 << 20

// Client talks HTTP/1.1 to one Firecracker API socket. It opens a fresh
// connection per request (Firecracker serves requests one at a time, and a
// kept-alive connection to a process that has since been replaced on the same
// socket path would fail on reuse). A Client is safe for concurrent use.
type Client struct {
	sock string
	hc   *http.Client
}

// NewClient returns a client for the API socket at apiSock.
func NewClient(apiSock string) *Client {
	tr := &httpconn.Transport{Dial: func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", apiSock)
	}}
	return &Client{sock: apiSock, hc: &http.Client{Transport: tr}}
}

// Socket returns the API socket path the client talks to.
func (c *Client) Socket() string { return c.sock }

// APIError is a non-2xx answer from Firecracker. Status is 400 for every
// error Firecracker reports (413 only for a full MMDS store); FaultMessage is
// the body's fault_message, or the raw body when it carried none.
type APIError struct {
	Method       string
	Path         string
	Status       int
	FaultMessage string
}

func (e *APIError) Error() string {
	msg := e.FaultMessage
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	return fmt.Sprintf("firecracker %s %s: %d: %s", e.Method, e.Path, e.Status, msg)
}

// do sends one request. in, when non-nil, is sent as the JSON body; out, when
// non-nil, receives the decoded JSON answer.
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("firecracker %s %s: encoding body: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://localhost"+path, body)
	if err != nil {
		return fmt.Errorf("firecracker %s %s: %w", method, path, err)
	}
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		// url.Error repeats method and URL; keep the cause only.
		if ue, ok := err.(*url.Error); ok {
			err = ue.Err
		}
		return fmt.Errorf("firecracker %s %s on %s: %w", method, path, c.sock, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody))
	if err != nil {
		return fmt.Errorf("firecracker %s %s: reading response: %w", method, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return &APIError{Method: method, Path: path, Status: resp.StatusCode, FaultMessage: faultMessage(data)}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("firecracker %s %s: decoding response %q: %w", method, path, truncate(data, 200), err)
	}
	return nil
}

func faultMessage(data []byte) string {
	var f faultBody
	if err := json.Unmarshal(data, &f); err == nil && f.FaultMessage != "" {
		return f.FaultMessage
	}
	return strings.TrimSpace(truncate(data, 512))
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}

// validPathID reports whether id may be used as a path id (drive_id,
// iface_id): Firecracker accepts only [A-Za-z0-9_]+.
func validPathID(id string) bool {
	if id == "" {
		return false
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}

// PutMachineConfig sets vCPUs and memory (pre-boot only).
func (c *Client) PutMachineConfig(ctx context.Context, m MachineConfig) error {
	return c.do(ctx, http.MethodPut, "/machine-config", m, nil)
}

// GetMachineConfig reads the machine configuration; it works before boot and
// is what readiness polls.
func (c *Client) GetMachineConfig(ctx context.Context) (MachineConfig, error) {
	var m MachineConfig
	err := c.do(ctx, http.MethodGet, "/machine-config", nil, &m)
	return m, err
}

// PutBootSource sets the kernel, initrd and kernel line (pre-boot only).
func (c *Client) PutBootSource(ctx context.Context, b BootSource) error {
	return c.do(ctx, http.MethodPut, "/boot-source", b, nil)
}

// PutDrive adds or replaces the drive d.DriveID.
func (c *Client) PutDrive(ctx context.Context, d Drive) error {
	if !validPathID(d.DriveID) {
		return fmt.Errorf("firecracker PUT /drives: drive id %q must match [A-Za-z0-9_]+", d.DriveID)
	}
	return c.do(ctx, http.MethodPut, "/drives/"+d.DriveID, d, nil)
}

// PutNetworkInterface adds the interface n.IfaceID backed by tap n.HostDevName.
func (c *Client) PutNetworkInterface(ctx context.Context, n NetworkInterface) error {
	if !validPathID(n.IfaceID) {
		return fmt.Errorf("firecracker PUT /network-interfaces: iface id %q must match [A-Za-z0-9_]+", n.IfaceID)
	}
	if len(n.HostDevName) == 0 || len(n.HostDevName) > 15 {
		return fmt.Errorf("firecracker PUT /network-interfaces/%s: tap name %q must be 1..15 characters", n.IfaceID, n.HostDevName)
	}
	return c.do(ctx, http.MethodPut, "/network-interfaces/"+n.IfaceID, n, nil)
}

// PutVsock configures the hybrid vsock device (pre-boot only).
func (c *Client) PutVsock(ctx context.Context, v Vsock) error {
	if err := CheckSocketPath(v.UDSPath); err != nil {
		return fmt.Errorf("firecracker PUT /vsock: %w", err)
	}
	return c.do(ctx, http.MethodPut, "/vsock", v, nil)
}

// PutLogger configures Firecracker's own log (pre-boot only).
func (c *Client) PutLogger(ctx context.Context, l Logger) error {
	return c.do(ctx, http.MethodPut, "/logger", l, nil)
}

// PutMetrics configures the metrics file (once per process, pre-boot only).
func (c *Client) PutMetrics(ctx context.Context, m Metrics) error {
	return c.do(ctx, http.MethodPut, "/metrics", m, nil)
}

func (c *Client) action(ctx context.Context, a string) error {
	return c.do(ctx, http.MethodPut, "/actions", instanceAction{ActionType: a}, nil)
}

// InstanceStart boots the VM; it needs a boot source and works only once.
func (c *Client) InstanceStart(ctx context.Context) error {
	return c.action(ctx, ActionInstanceStart)
}

// SendCtrlAltDel queues Ctrl-Alt-Del on the guest keyboard (x86, post-boot).
// Firecracker exits 0 only if the guest reacts and was booted with reboot=k.
func (c *Client) SendCtrlAltDel(ctx context.Context) error {
	return c.action(ctx, ActionSendCtrlAltDel)
}

// FlushMetrics writes the metrics file now (post-boot only).
func (c *Client) FlushMetrics(ctx context.Context) error {
	return c.action(ctx, ActionFlushMetrics)
}

// GetInstanceInfo reads GET /: id, state, VMM version and app name.
func (c *Client) GetInstanceInfo(ctx context.Context) (InstanceInfo, error) {
	var i InstanceInfo
	err := c.do(ctx, http.MethodGet, "/", nil, &i)
	return i, err
}

// GetVersion reads GET /version.
func (c *Client) GetVersion(ctx context.Context) (VersionInfo, error) {
	var v VersionInfo
	err := c.do(ctx, http.MethodGet, "/version", nil, &v)
	return v, err
}

// PatchVM pauses or resumes a running VM; state is VMPaused or VMResumed.
func (c *Client) PatchVM(ctx context.Context, state string) error {
	if state != VMPaused && state != VMResumed {
		return fmt.Errorf("firecracker PATCH /vm: state %q must be %q or %q", state, VMPaused, VMResumed)
	}
	return c.do(ctx, http.MethodPatch, "/vm", vmState{State: state}, nil)
}

// CreateSnapshot writes a snapshot of a paused VM.
func (c *Client) CreateSnapshot(ctx context.Context, s SnapshotCreate) error {
	if s.SnapshotPath == "" || s.MemFilePath == "" {
		return fmt.Errorf("firecracker PUT /snapshot/create: snapshot_path and mem_file_path are both required")
	}
	return c.do(ctx, http.MethodPut, "/snapshot/create", s, nil)
}

// LoadSnapshot restores a snapshot into a fresh process. Because a failed
// load kills Firecracker, the body is checked here first.
func (c *Client) LoadSnapshot(ctx context.Context, s SnapshotLoad) error {
	if s.SnapshotPath == "" {
		return fmt.Errorf("firecracker PUT /snapshot/load: snapshot_path is required")
	}
	if (s.MemFilePath == "") == (s.MemBackend == nil) {
		return fmt.Errorf("firecracker PUT /snapshot/load: set exactly one of mem_backend and mem_file_path")
	}
	return c.do(ctx, http.MethodPut, "/snapshot/load", s, nil)
}
