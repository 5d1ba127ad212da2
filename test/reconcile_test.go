//go:build system

package test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// waitReconciled waits until the running daemon logs that its start-up
// reconcile (which runs in the background while it serves) is done.
func (e *env) waitReconciled() {
	e.t.Helper()
	pid := e.daemonPID()
	mark := fmt.Sprintf("pid=%d ", pid)
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(filepath.Join(e.state, "bangerd.log"))
		s := string(b)
		if i := strings.LastIndex(s, "bangerd serving"); i >= 0 {
			if j := strings.Index(s[i:], "\n"); j >= 0 && strings.Contains(s[i:i+j], mark) && strings.Contains(s[i:], "start-up reconcile done") {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.t.Fatalf("bangerd (pid %d) did not finish its start-up reconcile within 60s:\n%s", pid, e.daemonLogTail())
}
