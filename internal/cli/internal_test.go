//go:build !banger_front

package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"banger/internal/hostops"
)

// TestInternalExitCodes: `banger internal` exits 2 for a refused or
// invalid request, with the kind in its JSON reply and nothing on stderr.
func TestInternalExitCodes(t *testing.T) {
	t.Setenv("SUDO_UID", "")
	t.Setenv("SUDO_GID", "")
	for _, tc := range []struct {
		name, op, in, kind string
	}{
		{"unknown op", "format-disk", `{}`, hostops.KindInvalid},
		{"bad JSON", "ensure-state-dirs", `{"dirs":`, hostops.KindInvalid},
		{"outside the roots", "ensure-state-dirs", `{"dirs":["/etc/banger-cli-test-must-not-exist"]}`, hostops.KindRefused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			a := &app{build: BuildInfo{Version: "test"}, stdout: &out, stderr: &errb, getenv: func(string) string { return "" }}
			root := a.rootCmd()
			root.SetArgs([]string{"internal", tc.op})
			root.SetIn(strings.NewReader(tc.in))
			root.SetOut(&out)
			root.SetErr(&errb)
			code, msg := classify(root.ExecuteContext(context.Background()))
			var r struct{ Kind, Message string }
			if err := json.Unmarshal(out.Bytes(), &r); err != nil {
				t.Fatalf("reply %q: %v", out.String(), err)
			}
			want := tc.kind
			if os.Geteuid() != 0 {
				want = hostops.KindRefused // not root: every request is refused
			}
			if code != ExitUsage || r.Kind != want || msg != "" || errb.Len() != 0 {
				t.Errorf("exit %d, kind %q, message %q, stderr %q; want exit 2, kind %s", code, r.Kind, msg, errb.String(), want)
			}
		})
	}
	if _, err := os.Stat("/etc/banger-cli-test-must-not-exist"); err == nil {
		t.Fatal("refused request created its directory")
	}
}
