package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"time"
)

// recorder appends one JSON line per event to the file named by
// FCFAKE_RECORD, so tests can check the order and overlap of requests and
// exits across processes. Each line is written with a single write on an
// O_APPEND descriptor, so lines from concurrent processes never interleave.
type recorder struct {
	f   *os.File // nil: recording is off
	pid int
	id  string
}

// event is one record line.
type event struct {
	T      string          `json:"t"`
	PID    int             `json:"pid"`
	ID     string          `json:"id"`
	Event  string          `json:"event"`
	Method string          `json:"method,omitempty"`
	Path   string          `json:"path,omitempty"`
	Body   json.RawMessage `json:"body,omitempty"`
	Status int             `json:"status,omitempty"`
	Fault  string          `json:"fault,omitempty"`
	Code   *int            `json:"code,omitempty"`
	Reason string          `json:"reason,omitempty"`
	Args   []string        `json:"args,omitempty"`
	Sock   string          `json:"api_sock,omitempty"`
}

func openRecorder(path, id string) (*recorder, error) {
	r := &recorder{pid: os.Getpid(), id: id}
	if path == "" {
		return r, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening FCFAKE_RECORD file %s: %w", path, err)
	}
	r.f = f
	return r, nil
}

func (r *recorder) write(e event) {
	if r.f == nil {
		return
	}
	e.T = time.Now().UTC().Format(time.RFC3339Nano)
	e.PID = r.pid
	e.ID = r.id
	line, err := json.Marshal(e)
	if err != nil {
		return
	}
	_, _ = r.f.Write(append(line, '\n'))
}

// bodyJSON returns the request body as JSON for a record line: the body
// itself (compacted) when it is valid JSON, otherwise the body as a string.
func bodyJSON(b []byte) json.RawMessage {
	if len(b) == 0 {
		return nil
	}
	var buf bytes.Buffer
	if json.Compact(&buf, b) == nil {
		return buf.Bytes()
	}
	s, _ := json.Marshal(string(b))
	return s
}
