package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/api"
)

type peerKey struct{}

// peerCred is the uid/pid of the process on the other end of the socket.
type peerCred struct {
	UID int
	PID int
	OK  bool
}

// checkPeer allows the daemon's own uid and root.
func checkPeer(peerUID, daemonUID int) error {
	if peerUID == daemonUID || peerUID == 0 {
		return nil
	}
	return fmt.Errorf("peer uid %d is not allowed: this bangerd belongs to uid %d", peerUID, daemonUID)
}

// connPeer reads SO_PEERCRED; OK is false when it cannot be read (not a
// unix socket, or the call failed).
func connPeer(c net.Conn) peerCred {
	if pc, ok := c.(*peerConn); ok {
		return pc.peer
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return peerCred{}
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return peerCred{}
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil || cerr != nil {
		return peerCred{}
	}
	return peerCred{UID: int(cred.Uid), PID: int(cred.Pid), OK: true}
}

// serverLimits bound what a peer can hold on the daemon socket.
type serverLimits struct {
	// HeaderTimeout: the request line and headers must arrive within it
	// (a connection that sends nothing is closed after it).
	HeaderTimeout time.Duration
	// BodyTimeout: an /rpc request body must arrive within it, counted
	// from the handler's start. /events has no body and no read limit.
	BodyTimeout time.Duration
	// IdleTimeout closes a keep-alive connection idle between requests
	// (longer than the client's own idle timeout, 30s).
	IdleTimeout time.Duration
	// EventsWriteTimeout drops an /events stream whose reader stopped
	// draining it: one write may block at most this long.
	EventsWriteTimeout time.Duration
	// PerUID and Total cap concurrent connections of one peer uid and of
	// all peers; a connection over a cap is closed at accept.
	PerUID, Total int
}

var defaultLimits = serverLimits{
	HeaderTimeout:      5 * time.Second,
	BodyTimeout:        5 * time.Second,
	IdleTimeout:        90 * time.Second,
	EventsWriteTimeout: 30 * time.Second,
	PerUID:             256,
	Total:              1024,
}

// listen binds the daemon socket behind the peer and connection checks
// of a peerListener.
func (d *Daemon) listen() (net.Listener, error) {
	l, err := listenSocket(d.paths.Socket)
	if err != nil {
		return nil, err
	}
	return newPeerListener(l, d.uid, defaultLimits, d.log), nil
}

// listenSocket binds the socket at path, mode 0600. A socket file left by
// a dead daemon is removed; one that answers means another daemon owns it.
func listenSocket(path string) (*net.UnixListener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("creating socket directory: %w", err)
	}
	if _, err := os.Lstat(path); err == nil {
		conn, err := net.DialTimeout("unix", path, 500*time.Millisecond)
		if err == nil {
			conn.Close()
			return nil, withKind(ErrConflict, "another bangerd already serves %s; stop it with `banger daemon stop`", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("removing stale socket %s: %w", path, err)
		}
	}
	old := syscall.Umask(0o177)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("chmod 0600 %s: %w", path, err)
	}
	return l, nil
}

func (d *Daemon) httpServer() *http.Server { return d.httpServerWith(defaultLimits) }

// httpServerWith serves /rpc and /events. There is no server-wide read or
// write timeout (it would cut /events streams): the header timeout bounds
// every request's start, the /rpc handler bounds its body, and idle
// keep-alive connections are closed after IdleTimeout.
func (d *Daemon) httpServerWith(lim serverLimits) *http.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+api.PathRPC, func(w http.ResponseWriter, r *http.Request) { d.handleRPC(w, r, lim.BodyTimeout) })
	mux.HandleFunc("GET "+api.PathEvents, func(w http.ResponseWriter, r *http.Request) { d.handleEvents(w, r, lim.EventsWriteTimeout) })
	return &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: lim.HeaderTimeout,
		IdleTimeout:       lim.IdleTimeout,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, peerKey{}, connPeer(c))
		},
		ErrorLog: nil,
	}
}

// requestPeer checks the peer of r: its credential must have been read
// and name the daemon's uid or root. (The listener already dropped every
// other connection; this holds if a connection ever bypasses it.)
func (d *Daemon) requestPeer(r *http.Request) (peerCred, error) {
	p, ok := r.Context().Value(peerKey{}).(peerCred)
	if !ok || !p.OK {
		return p, errors.New("peer credentials of this connection could not be read")
	}
	return p, checkPeer(p.UID, d.uid)
}

// readBody reads an /rpc body that must arrive within timeout. (Once the
// body is read the server clears the deadline itself, when it starts its
// background read, so a long call is not cut off.)
func readBody(w http.ResponseWriter, r *http.Request, limit int64, timeout time.Duration) ([]byte, error) {
	if timeout > 0 {
		_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(timeout))
	}
	return io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
}

func writeRPC(w http.ResponseWriter, resp api.Response) {
	resp.JSONRPC = "2.0"
	if resp.ID == nil {
		resp.ID = json.RawMessage("null")
	}
	w.Header().Set("Content-Type", "application/json")
	if resp.Error == nil && resp.Result != nil {
		// The result is already JSON (json.Marshal, HTML-escaped): put it
		// in the envelope as is. Encoding the envelope would scan and copy
		// it once more (a RawMessage is compacted), which for vm.list with
		// hundreds of VMs is a good part of the reply's time. The bytes are
		// the same as the encoder's.
		b := make([]byte, 0, len(resp.Result)+64)
		b = append(b, `{"jsonrpc":"2.0","id":`...)
		b = append(b, resp.ID...)
		b = append(b, `,"result":`...)
		b = append(b, resp.Result...)
		b = append(b, "}\n"...)
		_, _ = w.Write(b)
		return
	}
	_ = json.NewEncoder(w).Encode(resp)
}

func rpcErr(code int, kind, msg string) *api.Error {
	return &api.Error{Code: code, Message: msg, Data: api.ErrorData{Kind: kind}}
}

func (d *Daemon) handleRPC(w http.ResponseWriter, r *http.Request, bodyTimeout time.Duration) {
	if p, err := d.requestPeer(r); err != nil {
		d.log.Warn("rejected peer", "op", "rpc", "peer_uid", p.UID, "peer_pid", p.PID, "err", err)
		writeRPC(w, api.Response{Error: rpcErr(api.CodeInvalidRequest, api.KindInvalid, err.Error())})
		return
	}
	body, err := readBody(w, r, api.MaxRequestBytes, bodyTimeout)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeRPC(w, api.Response{Error: rpcErr(api.CodeInvalidRequest, api.KindInvalid,
				fmt.Sprintf("request body over the %d-byte limit", api.MaxRequestBytes))})
			return
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			writeRPC(w, api.Response{Error: rpcErr(api.CodeInvalidRequest, api.KindInvalid,
				fmt.Sprintf("reading request: the body did not arrive within %s", bodyTimeout))})
			return
		}
		writeRPC(w, api.Response{Error: rpcErr(api.CodeParse, api.KindInvalid, "reading request: "+err.Error())})
		return
	}
	var req api.Request
	if err := json.Unmarshal(body, &req); err != nil {
		writeRPC(w, api.Response{Error: rpcErr(api.CodeParse, api.KindInvalid, "malformed JSON-RPC request: "+err.Error())})
		return
	}
	if req.JSONRPC != "2.0" || req.Method == "" {
		writeRPC(w, api.Response{ID: req.ID, Error: rpcErr(api.CodeInvalidRequest, api.KindInvalid,
			`invalid JSON-RPC request: need "jsonrpc":"2.0" and a method`)})
		return
	}
	h, ok := d.methods()[req.Method]
	if !ok {
		writeRPC(w, api.Response{ID: req.ID, Error: rpcErr(api.CodeMethodNotFound, api.KindInvalid,
			fmt.Sprintf("unknown method %q", req.Method))})
		return
	}
	start := time.Now()
	res, err := h(r.Context(), req.Params)
	if err != nil {
		var pe *paramsError
		if errors.As(err, &pe) {
			writeRPC(w, api.Response{ID: req.ID, Error: rpcErr(api.CodeInvalidParams, api.KindInvalid, pe.Error())})
			return
		}
		e := toRPCError(err)
		if e.Data.Kind == api.KindInternal {
			d.log.Error("rpc failed", "op", req.Method, "took", time.Since(start), "err", err)
		}
		writeRPC(w, api.Response{ID: req.ID, Error: e})
		return
	}
	out, err := json.Marshal(res)
	if err != nil {
		writeRPC(w, api.Response{ID: req.ID, Error: rpcErr(api.CodeInternal, api.KindInternal, "encoding result: "+err.Error())})
		return
	}
	writeRPC(w, api.Response{ID: req.ID, Result: out})
}

// paramsError is a params decoding failure (JSON-RPC invalid params).
type paramsError struct{ msg string }

func (e *paramsError) Error() string { return e.msg }

// decodeParams strictly decodes params into v.
func decodeParams(method string, raw json.RawMessage, v any) error {
	if len(raw) == 0 || string(raw) == "null" {
		raw = json.RawMessage("{}")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return &paramsError{msg: fmt.Sprintf("invalid params for %s: %v", method, err)}
	}
	return nil
}

func (d *Daemon) handleEvents(w http.ResponseWriter, r *http.Request, writeTimeout time.Duration) {
	if _, err := d.requestPeer(r); err != nil {
		http.Error(w, err.Error(), http.StatusForbidden)
		return
	}
	if _, ok := w.(http.Flusher); !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	rc := http.NewResponseController(w)
	// Each write gets its own deadline, so a reader that stopped draining
	// the stream is dropped; none is left behind for the connection.
	deadline := func() {
		if writeTimeout > 0 {
			_ = rc.SetWriteDeadline(time.Now().Add(writeTimeout))
		}
	}
	defer rc.SetWriteDeadline(time.Time{})
	ch, cancel := d.events.subscribe()
	defer cancel()
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	deadline()
	if rc.Flush() != nil {
		return
	}
	enc := json.NewEncoder(w)
	tick := time.NewTicker(15 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-d.stopping:
			return
		case ev, ok := <-ch:
			if !ok {
				return
			}
			deadline()
			if err := enc.Encode(ev); err != nil || rc.Flush() != nil {
				return
			}
		case <-tick.C:
			deadline()
			if _, err := w.Write([]byte("\n")); err != nil || rc.Flush() != nil {
				return
			}
		}
	}
}
