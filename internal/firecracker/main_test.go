package firecracker

import (
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/procwatch"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// helperEnv makes the test binary act as a stand-in Firecracker process (the
// helper-process trick): it is launched with Firecracker's flags.
const helperEnv = "FCTEST_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(helperMain(mode, os.Args[1:]))
	}
	os.Exit(m.Run())
}

// helperMain: "sleep" waits to be killed; "serve" binds --api-sock after
// FCTEST_SOCKET_DELAY and answers GET /machine-config like Firecracker.
func helperMain(mode string, args []string) int {
	flags := map[string]string{}
	for i := 0; i+1 < len(args); i += 2 {
		flags[args[i]] = args[i+1]
	}
	stdin, _ := os.Readlink("/proc/self/fd/0")
	fmt.Printf("helper %d up, stdin=%s\n", os.Getpid(), stdin)
	fmt.Fprintf(os.Stderr, "helper stderr line\n")
	if p := flags["--log-path"]; p != "" {
		if f, err := os.OpenFile(p, os.O_RDWR|os.O_APPEND, 0); err == nil {
			fmt.Fprintf(f, "log: instance %s\n", flags["--id"])
			f.Close()
		}
	}
	switch mode {
	case "sleep":
		for {
			time.Sleep(time.Hour)
		}
	case "serve":
		if d, err := time.ParseDuration(os.Getenv("FCTEST_SOCKET_DELAY")); err == nil {
			time.Sleep(d)
		}
		ln, err := net.Listen("unix", flags["--api-sock"])
		if err != nil {
			fmt.Fprintf(os.Stderr, "Failed to open the API socket: %v\n", err)
			return 1
		}
		ln.(*net.UnixListener).SetUnlinkOnClose(false)
		mux := http.NewServeMux()
		mux.HandleFunc("GET /machine-config", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(MachineConfig{VCPUCount: 1, MemSizeMib: 128, HugePages: "None"})
		})
		http.Serve(ln, mux)
		return 1
	}
	fmt.Fprintf(os.Stderr, "unknown helper mode %q\n", mode)
	return 2
}

// testWatcher is a process watcher closed at the end of the test.
func testWatcher(t *testing.T) *procwatch.Watcher {
	t.Helper()
	w, err := procwatch.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

// launchHelper starts the test binary as a stand-in Firecracker through
// Launch and makes sure it is killed and reaped at the end of the test.
func launchHelper(t *testing.T, mode string, s LaunchSpec) *procwatch.Proc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	s.Binary = exe
	s.Env = append(s.Env, helperEnv+"="+mode)
	p, err := Launch(t.Context(), testWatcher(t), s)
	if err != nil {
		t.Fatalf("Launch: %v", err)
	}
	t.Cleanup(func() {
		p.Kill()
		select {
		case <-p.Done():
		case <-time.After(10 * time.Second):
			t.Errorf("helper %d not reaped", p.Pid())
		}
	})
	return p
}

// shortDir returns a fresh directory with a short path, so unix socket paths
// stay well under 107 bytes whatever the test's name.
func shortDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "fct")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// golden compares got with testdata/name.golden, rewriting it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	p := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("reading golden file (run go test -update to create it): %v", err)
	}
	if got != string(want) {
		t.Errorf("%s mismatch\n got: %s\nwant: %s", p, got, want)
	}
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func ptr[T any](v T) *T { return &v }

func mustContain(t *testing.T, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("%q does not contain %q", s, sub)
		}
	}
}
