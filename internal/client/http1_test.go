package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/api"
)

// listVMsReply is a vm.list reply with n VMs, and the list it holds.
func listVMsReply(n int) (string, api.VMList) {
	var l api.VMList
	for i := range n {
		l.VMs = append(l.VMs, api.VM{ID: fmt.Sprintf("id%04d", i), Name: fmt.Sprintf("vm%04d", i), State: "stopped", VCPU: 2})
	}
	b, _ := json.Marshal(api.Response{JSONRPC: "2.0", ID: json.RawMessage("1"), Result: mustRaw(l)})
	return string(b), l
}

func mustRaw(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}

// Every way net/http's server frames a reply (a Content-Length, chunked
// in many writes, close-delimited) reads back whole, and the request
// arrives as net/http reads it.
func TestCallThroughNetHTTPServer(t *testing.T) {
	body, want := listVMsReply(2000) // ~300 KB: chunked unless a length is set
	sock := filepath.Join(t.TempDir(), "d.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	mode := make(chan string, 1)
	var got struct {
		method, path, ctype string
		req                 api.Request
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.method, got.path, got.ctype = r.Method, r.URL.Path, r.Header.Get("Content-Type")
		json.NewDecoder(r.Body).Decode(&got.req)
		switch <-mode {
		case "length":
			w.Header().Set("Content-Length", fmt.Sprint(len(body)))
			io.WriteString(w, body)
		case "chunked":
			for i := 0; i < len(body); i += 1000 {
				io.WriteString(w, body[i:min(i+1000, len(body))])
				w.(http.Flusher).Flush()
			}
		case "close":
			conn, brw, err := w.(http.Hijacker).Hijack()
			if err != nil {
				t.Error(err)
				return
			}
			brw.WriteString("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + body)
			brw.Flush()
			conn.Close()
		}
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	for _, m := range []string{"length", "chunked", "close"} {
		mode <- m
		var l api.VMList
		if err := New(sock).Call(context.Background(), api.MethodVMList, map[string]int{"x": 1}, &l); err != nil {
			t.Fatalf("%s: %v", m, err)
		}
		if len(l.VMs) != len(want.VMs) || l.VMs[1999].Name != want.VMs[1999].Name || l.VMs[1999].ID != want.VMs[1999].ID {
			t.Fatalf("%s: decoded %d VMs, want %d", m, len(l.VMs), len(want.VMs))
		}
		if got.method != "POST" || got.path != api.PathRPC || got.ctype != "application/json" || got.req.Method != api.MethodVMList || string(got.req.Params) != `{"x":1}` {
			t.Fatalf("%s: server saw %s %s (%s) %+v", m, got.method, got.path, got.ctype, got.req)
		}
	}
}

// rawServer answers every connection with reply (after reading the
// request's header) and closes it.
func rawServer(t *testing.T, reply string) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "d.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					l, err := br.ReadString('\n')
					if err != nil || l == "\r\n" {
						break
					}
				}
				io.WriteString(c, reply)
			}()
		}
	}()
	return sock
}

// Chunk extensions and trailers are skipped; a reply cut short, a bad
// chunk size or a bad status line is an error naming the call.
func TestReplyFraming(t *testing.T) {
	ok := `{"jsonrpc":"2.0","id":1,"result":{"pid":42}}`
	chunked := "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" +
		fmt.Sprintf("%x;ext=1\r\n%s\r\n", 10, ok[:10]) + fmt.Sprintf("%X\r\n%s\r\n", len(ok)-10, ok[10:]) + "0\r\nX-Trailer: y\r\n\r\n"
	var st api.DaemonStatus
	if err := New(rawServer(t, chunked)).Call(context.Background(), api.MethodDaemonStatus, nil, &st); err != nil || st.PID != 42 {
		t.Fatalf("chunked with extension and trailer: %+v %v", st, err)
	}
	lf := "HTTP/1.1 200 OK\nContent-Length: " + fmt.Sprint(len(ok)) + "\n\n" + ok
	if err := New(rawServer(t, lf)).Call(context.Background(), api.MethodDaemonStatus, nil, &st); err != nil || st.PID != 42 {
		t.Fatalf("bare LF line ends: %+v %v", st, err)
	}
	for name, reply := range map[string]string{
		"short length":  "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + ok,
		"short chunk":   "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n64\r\n" + ok,
		"no last chunk": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + fmt.Sprintf("%x\r\n%s\r\n", len(ok), ok),
		"bad size":      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n" + ok,
		"bad status":    "HTTP/9 what\r\n\r\n" + ok,
		"cut header":    "HTTP/1.1 200 OK\r\nContent-Le",
	} {
		err := New(rawServer(t, reply)).Call(context.Background(), api.MethodDaemonStatus, nil, &st)
		if err == nil || !strings.Contains(err.Error(), "daemon.status") {
			t.Errorf("%s: %v, want an error naming the call", name, err)
		}
	}
	if err := New(rawServer(t, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"+ok)).Call(context.Background(), api.MethodDaemonStatus, nil, &st); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("short length: %v, want io.ErrUnexpectedEOF", err)
	}
}

// A daemon that takes the request and never answers: the context's
// deadline or cancel ends the call with the context's error.
func TestCallEndsWithContext(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "d.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	arrived := make(chan struct{}, 2)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			c.Read(make([]byte, 4096))
			arrived <- struct{}{}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := New(sock).Call(ctx, api.MethodVMList, nil, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("deadline: %v, want context.DeadlineExceeded", err)
	}
	ctx, cancel = context.WithCancel(context.Background())
	go func() {
		<-arrived
		<-arrived
		cancel()
	}()
	if err := New(sock).Call(ctx, api.MethodVMList, nil, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancel: %v, want context.Canceled", err)
	}
}

// Events reads a stream of JSON lines, flushed one by one, until the
// context ends; a stream refused with a status says so.
func TestEventsStream(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "d.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	refuse := make(chan bool, 1)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != "GET" || r.URL.Path != api.PathEvents {
			http.Error(w, "wrong request", http.StatusBadRequest)
			return
		}
		if <-refuse {
			http.Error(w, "no", http.StatusServiceUnavailable)
			return
		}
		for i := range 3 {
			fmt.Fprintf(w, `{"kind":"vm.state","vm_id":"v%d"}`+"\n", i)
			w.(http.Flusher).Flush()
		}
		<-r.Context().Done()
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	refuse <- false
	ctx, cancel := context.WithCancel(context.Background())
	ch, errf, err := New(sock).Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		ev := <-ch
		if ev.Kind != "vm.state" || ev.VMID != fmt.Sprintf("v%d", i) {
			t.Fatalf("event %d: %+v", i, ev)
		}
	}
	cancel()
	for range ch {
	}
	if err := errf(); err != nil {
		t.Fatalf("stream ended by its context: %v", err)
	}

	refuse <- true
	if _, _, err := New(sock).Events(context.Background()); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("refused stream: %v", err)
	}
}

// The request body written out is byte for byte what encoding/json makes
// of api.Request, with params as Call has them (a Marshal result).
func TestRequestBodyMatchesMarshal(t *testing.T) {
	for _, tc := range []struct {
		id     int64
		method string
		params any
	}{
		{1, api.MethodVMList, nil},
		{42, api.MethodVMCreate, map[string]any{"name": "dev", "vcpu": 2, "tags": []string{"a<b&c"}}},
		{7, "odd \"method\" <&> é\n", []int{1, 2}},
		{-3, "", nil},
	} {
		var raw json.RawMessage
		if tc.params != nil {
			raw = mustRaw(tc.params)
		}
		want, err := json.Marshal(api.Request{JSONRPC: "2.0", ID: json.RawMessage(fmt.Sprint(tc.id)), Method: tc.method, Params: raw})
		if err != nil {
			t.Fatal(err)
		}
		got, err := requestBody(tc.id, tc.method, raw)
		if err != nil || string(got) != string(want) {
			t.Errorf("%q: %s (%v), want %s", tc.method, got, err, want)
		}
	}
}
