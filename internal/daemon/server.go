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

func connPeer(c net.Conn) peerCred {
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

// listen binds the daemon socket. A socket file left by a dead daemon is
// removed; one that answers means another daemon owns it.
func listen(path string) (*net.UnixListener, error) {
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

func (d *Daemon) httpServer() *http.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+api.PathRPC, d.handleRPC)
	mux.HandleFunc("GET "+api.PathEvents, d.handleEvents)
	return &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, peerKey{}, connPeer(c))
		},
		ErrorLog: nil,
	}
}

func writeRPC(w http.ResponseWriter, resp api.Response) {
	resp.JSONRPC = "2.0"
	if resp.ID == nil {
		resp.ID = json.RawMessage("null")
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

func rpcErr(code int, kind, msg string) *api.Error {
	return &api.Error{Code: code, Message: msg, Data: api.ErrorData{Kind: kind}}
}

func (d *Daemon) handleRPC(w http.ResponseWriter, r *http.Request) {
	if p, ok := r.Context().Value(peerKey{}).(peerCred); ok && p.OK {
		if err := checkPeer(p.UID, d.uid); err != nil {
			d.log.Warn("rejected peer", "op", "rpc", "peer_uid", p.UID, "peer_pid", p.PID)
			writeRPC(w, api.Response{Error: rpcErr(api.CodeInvalidRequest, api.KindInvalid, err.Error())})
			return
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, api.MaxRequestBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeRPC(w, api.Response{Error: rpcErr(api.CodeInvalidRequest, api.KindInvalid,
				fmt.Sprintf("request body over the %d-byte limit", api.MaxRequestBytes))})
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

func (d *Daemon) handleEvents(w http.ResponseWriter, r *http.Request) {
	if p, ok := r.Context().Value(peerKey{}).(peerCred); ok && p.OK {
		if err := checkPeer(p.UID, d.uid); err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	ch, cancel := d.events.subscribe()
	defer cancel()
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	fl.Flush()
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
			if err := enc.Encode(ev); err != nil {
				return
			}
			fl.Flush()
		case <-tick.C:
			if _, err := w.Write([]byte("\n")); err != nil {
				return
			}
			fl.Flush()
		}
	}
}
