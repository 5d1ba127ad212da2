package agent

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// PathPorts lists the guest's listening TCP sockets (GET, PortsResponse).
const PathPorts = "/v1/ports"

// Listener is one listening TCP socket in the guest.
type Listener struct {
	// Proto is "tcp" (from /proc/net/tcp) or "tcp6" (/proc/net/tcp6).
	Proto string `json:"proto"`
	// Addr is the bound address: "127.0.0.1", "0.0.0.0", "::", "::1", ...
	Addr string `json:"addr"`
	Port uint16 `json:"port"`
}

// PortsResponse is the body of GET /v1/ports.
type PortsResponse struct {
	Listeners []Listener `json:"listeners"`
}

// ErrPortsUnsupported: the agent has no /v1/ports or /v1/connect (it
// predates protocol 2).
var ErrPortsUnsupported = errors.New("the guest agent does not support port forwarding")

// tcpListen is the st column of a LISTEN socket in /proc/net/tcp*.
const tcpListen = "0A"

func (s *server) ports(w http.ResponseWriter, r *http.Request) {
	ls, err := s.listeners()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, PortsResponse{Listeners: ls})
}

// listeners reads the listening sockets of ProcRoot/net/tcp and tcp6,
// deduplicated (SO_REUSEPORT groups show one line per socket) and sorted by
// port, then protocol, then address. With ExactListeners only those bound
// to GuestLoopback are kept.
func (s *server) listeners() ([]Listener, error) {
	var all []Listener
	for _, proto := range []string{"tcp", "tcp6"} {
		ls, err := readProcNetTCP(filepath.Join(s.opts.ProcRoot, "net", proto), proto)
		if err != nil {
			if proto == "tcp6" && errors.Is(err, os.ErrNotExist) {
				continue // a kernel without IPv6
			}
			return nil, err
		}
		all = append(all, ls...)
	}
	if s.opts.ExactListeners {
		want := s.opts.GuestLoopback.String()
		all = slices.DeleteFunc(all, func(l Listener) bool { return l.Proto != "tcp" || l.Addr != want })
	}
	slices.SortFunc(all, func(a, b Listener) int {
		if a.Port != b.Port {
			return int(a.Port) - int(b.Port)
		}
		if c := strings.Compare(a.Proto, b.Proto); c != 0 {
			return c
		}
		return strings.Compare(a.Addr, b.Addr)
	})
	all = slices.Compact(all)
	if all == nil {
		all = []Listener{}
	}
	return all, nil
}

// readProcNetTCP parses one /proc/net/tcp-format file and returns its
// LISTEN sockets.
func readProcNetTCP(path, proto string) ([]Listener, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading listening sockets: %w", err)
	}
	defer f.Close()
	var out []Listener
	sc := bufio.NewScanner(f)
	first := true
	for sc.Scan() {
		if first { // the header line
			first = false
			continue
		}
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 || fields[3] != tcpListen {
			continue
		}
		addr, port, err := parseProcAddr(fields[1])
		if err != nil {
			return nil, fmt.Errorf("reading listening sockets from %s: %w", path, err)
		}
		out = append(out, Listener{Proto: proto, Addr: addr.String(), Port: port})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading listening sockets from %s: %w", path, err)
	}
	return out, nil
}

// parseProcAddr parses a local_address field: the address as 32-bit words
// printed in hex in host byte order ("0100007F" is 127.0.0.1 on a
// little-endian machine), a colon, the port in hex.
func parseProcAddr(s string) (netip.Addr, uint16, error) {
	h, p, ok := strings.Cut(s, ":")
	if !ok || (len(h) != 8 && len(h) != 32) {
		return netip.Addr{}, 0, fmt.Errorf("malformed socket address %q", s)
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.Addr{}, 0, fmt.Errorf("malformed port in socket address %q", s)
	}
	raw, err := hex.DecodeString(h)
	if err != nil {
		return netip.Addr{}, 0, fmt.Errorf("malformed socket address %q", s)
	}
	b := make([]byte, len(raw))
	for i := 0; i < len(raw); i += 4 {
		// The kernel printed the word's value; its bytes in memory (network
		// order) are the value in native order.
		binary.NativeEndian.PutUint32(b[i:], binary.BigEndian.Uint32(raw[i:]))
	}
	addr, _ := netip.AddrFromSlice(b)
	return addr, uint16(port), nil
}

// Ports calls GET /v1/ports. An agent without it gives ErrPortsUnsupported.
func (c *Client) Ports(ctx context.Context) ([]Listener, error) {
	// An old agent answers 404 (its mux has no such route).
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://agent"+PathPorts, nil)
	if err != nil {
		return nil, fmt.Errorf("building agent request %s: %w", PathPorts, err)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("calling agent %s: %w", PathPorts, unwrapURLError(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed {
		return nil, ErrPortsUnsupported
	}
	var pr PortsResponse
	if err := decodeAnswer(resp, PathPorts, &pr); err != nil {
		return nil, err
	}
	if pr.Listeners == nil {
		pr.Listeners = []Listener{}
	}
	return pr.Listeners, nil
}

// decodeAnswer reads a JSON answer of path: 200 with out's type, else an
// error with the agent's message.
func decodeAnswer(resp *http.Response, path string, out any) error {
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return fmt.Errorf("reading agent %s response: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		var eb errorBody
		msg := strings.TrimSpace(string(body))
		if json.Unmarshal(body, &eb) == nil && eb.Error != "" {
			msg = eb.Error
		}
		if len(msg) > 200 {
			msg = msg[:200] + "..."
		}
		return fmt.Errorf("agent %s answered %s: %s", path, resp.Status, msg)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("decoding agent %s response: %w", path, err)
	}
	return nil
}
