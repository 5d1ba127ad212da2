package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// faultError is a 400 with Firecracker's fault_message. fatal makes the
// process exit 1 right after the answer is sent (a failed snapshot load).
type faultError struct {
	msg   string
	fatal bool
}

func (e *faultError) Error() string { return e.msg }

func fault(format string, a ...any) error {
	return &faultError{msg: fmt.Sprintf(format, a...)}
}

// ServeHTTP handles one API request. Requests run one at a time, as on
// Firecracker's single API thread.
func (v *vmm) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, readErr := io.ReadAll(io.LimitReader(r.Body, int64(v.args.maxPayload)+1))
	v.rec.write(event{Event: "request", Method: r.Method, Path: r.URL.Path, Body: bodyJSON(body)})

	v.apiMu.Lock()
	defer v.apiMu.Unlock()

	w.Header().Set("Server", "Firecracker API")
	var (
		out any
		err error
	)
	switch {
	case readErr != nil:
		err = fault("Reading the request body failed: %v", readErr)
	case len(body) > v.args.maxPayload:
		err = fault("Request payload with size %d is larger than the limit of %d allowed by server.", len(body), v.args.maxPayload)
	default:
		out, err = v.route(r.Method, r.URL.Path, body)
	}
	status := http.StatusNoContent
	var fe *faultError
	switch {
	case err != nil:
		status = http.StatusBadRequest
		if !errors.As(err, &fe) {
			fe = &faultError{msg: err.Error()}
		}
		v.log.logf(levelError, "Received Error. Status code: 400 Bad Request. Message: %s", fe.msg)
		writeJSON(w, status, map[string]string{"fault_message": fe.msg})
	case out != nil:
		status = http.StatusOK
		writeJSON(w, status, out)
	default:
		w.WriteHeader(status)
	}
	rec := event{Event: "response", Method: r.Method, Path: r.URL.Path, Status: status}
	if fe != nil {
		rec.Fault = fe.msg
	}
	v.rec.write(rec)
	if fe != nil && fe.fatal {
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		v.exit(1, fe.msg)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"fault_message":"encoding the response failed"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	// A length, not chunks: a fatal fault's answer is flushed whole before
	// the process exits, as Firecracker's is.
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// unimplemented are real endpoints this fake does not model. They answer a
// 400 naming the fake, rather than pretending to be an unknown path.
var unimplemented = map[string]bool{
	"balloon": true, "cpu-config": true, "entropy": true, "hotplug": true,
	"mmds": true, "pmem": true, "serial": true,
}

// route dispatches a request. It returns the GET answer, nil for 204, or an
// error for 400. Body checks come first, as in Firecracker's request parser.
func (v *vmm) route(method, path string, body []byte) (any, error) {
	tokens := strings.Split(strings.TrimPrefix(path, "/"), "/")
	resource := tokens[0]
	id := ""
	if len(tokens) > 1 {
		id = tokens[1]
	}
	switch method {
	case http.MethodGet:
		if len(body) > 0 {
			return nil, fault("GET request cannot have a body.")
		}
	case http.MethodPut, http.MethodPatch:
		if len(body) == 0 {
			return nil, fault("Empty %s request.", method)
		}
	}

	switch method + " " + resource {
	case "GET ":
		return map[string]string{"id": v.args.id, "state": v.state(), "vmm_version": v.version(), "app_name": "Firecracker"}, nil
	case "GET version":
		return map[string]string{"firecracker_version": v.version()}, nil
	case "GET machine-config":
		return v.machine, nil
	case "GET vm":
		if id == "config" {
			return v.fullConfig(), nil
		}
	case "PUT machine-config":
		return nil, v.putMachine(body, false)
	case "PATCH machine-config":
		return nil, v.putMachine(body, true)
	case "PUT boot-source":
		return nil, v.putBootSource(body)
	case "PUT drives":
		return nil, v.putDrive(id, body)
	case "PATCH drives":
		return nil, v.patchDrive(id, body)
	case "PUT network-interfaces":
		return nil, v.putNet(id, body)
	case "PATCH network-interfaces":
		return nil, v.patchNet(id, body)
	case "PUT vsock":
		return nil, v.putVsock(body)
	case "PUT logger":
		return nil, v.putLogger(body)
	case "PUT metrics":
		return nil, v.putMetrics(body)
	case "PUT actions":
		return nil, v.putAction(body)
	case "PATCH vm":
		if id == "" {
			return nil, v.patchVM(body)
		}
	case "PUT balloon", "GET balloon", "PATCH balloon":
		if out, handled, err := v.balloonAPI(method, id, body); handled {
			return out, err
		}
	case "PUT snapshot":
		switch id {
		case "create":
			return nil, v.snapshotCreate(body)
		case "load":
			return nil, v.snapshotLoad(body)
		}
	}
	if unimplemented[resource] {
		return nil, fault("fcfake does not implement %s %s (it models only what banger uses)", method, path)
	}
	return nil, fault("Invalid request method and/or path: %s %s.", method, resource)
}

// fullConfig is GET /vm/config.
func (v *vmm) fullConfig() any {
	drives := make([]*drive, 0, len(v.drives))
	drives = append(drives, v.drives...)
	ifaces := make([]*netIface, 0, len(v.ifaces))
	ifaces = append(ifaces, v.ifaces...)
	cfg := map[string]any{
		"machine-config":     v.machine,
		"drives":             drives,
		"network-interfaces": ifaces,
	}
	if v.boot != nil {
		cfg["boot-source"] = v.boot
	}
	if v.vsock != nil {
		cfg["vsock"] = map[string]any{"guest_cid": v.vsock.cid, "uds_path": v.vsock.path}
	}
	return cfg
}
