package cli

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/api"
)

// TestDaemonStartWaitsForLockHolder: the bangerd that daemon start runs
// exits 3 because another one holds the daemon lock and is still starting
// (issue 11: the second command used to fail with "another bangerd is
// already running"). daemon start waits for that one to answer instead.
func TestDaemonStartWaitsForLockHolder(t *testing.T) {
	env := envWithConfig(t, "")
	ran := filepath.Join(env["HOME"], "ran")
	bangerd := filepath.Join(env["HOME"], "bangerd")
	script := "#!/bin/sh\ntouch " + ran + "\necho 'bangerd: another bangerd is already running (pid 4242, lock x)' >&2\nexit 3\n"
	if err := os.WriteFile(bangerd, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	env["BANGER_DAEMON_BIN"] = bangerd
	sock := filepath.Join(env["XDG_RUNTIME_DIR"], "banger", "bangerd.sock")
	served := make(chan *http.Server, 1)
	go func() {
		// The lock holder starts answering only after the started
		// bangerd has given up.
		for {
			if _, err := os.Stat(ran); err == nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(100 * time.Millisecond)
		os.MkdirAll(filepath.Dir(sock), 0o700)
		ln, err := net.Listen("unix", sock)
		if err != nil {
			t.Error(err)
			served <- nil
			return
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			res, _ := json.Marshal(api.DaemonStatus{PID: 4242})
			json.NewEncoder(w).Encode(api.Response{JSONRPC: "2.0", ID: json.RawMessage("1"), Result: res})
		})}
		served <- srv
		srv.Serve(ln)
	}()
	out, errOut, code := runCLI(t, env, "daemon", "start")
	if srv := <-served; srv != nil {
		srv.Close()
	}
	if code != 0 || !strings.Contains(out, "pid 4242") {
		t.Fatalf("daemon start: exit %d\nstdout %q\nstderr %q", code, out, errOut)
	}
}
