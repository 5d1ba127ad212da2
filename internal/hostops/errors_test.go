package hostops

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"banger/internal/network"
)

var sentinels = map[string]error{"refused": ErrRefused, "invalid": ErrInvalid, "not_found": ErrNotFound, "busy": ErrBusy}

// isSet says which sentinels errors.Is finds in err.
func isSet(err error) string {
	var out []string
	for _, k := range []string{"refused", "invalid", "not_found", "busy"} {
		if errors.Is(err, sentinels[k]) {
			out = append(out, k)
		}
	}
	return strings.Join(out, ",")
}

// kindCases are handler errors of every kind, with what errors.Is must
// report for the client's error.
var kindCases = []struct {
	name string
	err  error
	kind string
	is   string
}{
	{"refusal", fmt.Errorf("%w: path %q is outside banger's directories", ErrRefused, "/etc/x"), KindRefused, "refused"},
	{"network says not banger's", fmt.Errorf("deleting tap bgt-x: %w: it lacks banger's mark, left alone", network.ErrNotBanger), KindRefused, "refused"},
	{"bad arguments", decode("x", []byte(`{"nope":1}`), &struct{}{}), KindInvalid, "refused,invalid"},
	{"not found", fmt.Errorf("%w: device-mapper device banger-x", ErrNotFound), KindNotFound, "not_found"},
	{"no debootstrap", fmt.Errorf("starting the build: %w", ErrNoDebootstrap), KindNotFound, "not_found"},
	{"missing file", fmt.Errorf("opening /x: %w", fs.ErrNotExist), KindNotFound, "not_found"},
	{"busy", fmt.Errorf("%w: device banger-x is open", ErrBusy), KindBusy, "busy"},
	{"EBUSY", fmt.Errorf("configuring /dev/loop3: %w", syscall.EBUSY), KindBusy, "busy"},
	{"anything else", errors.New("dmsetup create banger-x: Command failed"), KindInternal, ""},
}

// TestErrorKindsCrossTheWire: an op's error turns into the same *Error
// in-process and after the helper's JSON reply, and Serve's exit code
// follows the kind.
func TestErrorKindsCrossTheWire(t *testing.T) {
	for _, tc := range kindCases {
		t.Run(tc.name, func(t *testing.T) {
			if got := KindOf(tc.err); got != tc.kind {
				t.Fatalf("KindOf = %s, want %s", got, tc.kind)
			}
			inProc := failure(tc.err).err("some-op")
			var wire bytes.Buffer
			if err := json.NewEncoder(&wire).Encode(failure(tc.err)); err != nil {
				t.Fatal(err)
			}
			var r reply
			if err := json.Unmarshal(wire.Bytes(), &r); err != nil {
				t.Fatal(err)
			}
			viaSudo := r.err("some-op")
			if inProc.Error() != viaSudo.Error() || inProc.Error() != "privileged op some-op: "+tc.err.Error() {
				t.Errorf("messages differ: in-process %q, through sudo %q", inProc, viaSudo)
			}
			if a, b := isSet(inProc), isSet(viaSudo); a != tc.is || b != tc.is {
				t.Errorf("errors.Is: in-process %q, through sudo %q, want %q", a, b, tc.is)
			}
			want := 1
			if tc.kind == KindRefused || tc.kind == KindInvalid {
				want = 2
			}
			if got := ExitCode(r.Kind); got != want {
				t.Errorf("exit code %d, want %d", got, want)
			}
		})
	}
}

// fakeSudo writes a stand-in for sudo that prints reply and exits with
// code, as an older (or newer) helper would.
func fakeSudo(t *testing.T, reply string, code int) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "sudo")
	script := fmt.Sprintf("#!/bin/sh\ncat >/dev/null\nprintf '%%s\\n' '%s'\nexit %d\n", reply, code)
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestOlderHelperReplies: the client reads the reply shape of older
// helpers ({"error": ..., "refused": true}) and unknown kinds of newer ones.
func TestOlderHelperReplies(t *testing.T) {
	tests := []struct {
		name, reply string
		code        int
		is, msg     string
	}{
		{"old refusal", `{"error":"refused: path \"/etc/x\" is outside banger'"'"'s directories","refused":true}`, 1, "refused",
			`privileged op ensure-state-dirs: refused: path "/etc/x" is outside banger's directories`},
		{"old failure", `{"error":"mkdir /x: permission denied"}`, 1, "", "privileged op ensure-state-dirs: mkdir /x: permission denied"},
		{"new refusal", `{"kind":"refused","message":"refused: nope","error":"refused: nope","refused":true}`, 2, "refused", "privileged op ensure-state-dirs: refused: nope"},
		{"unknown kind", `{"kind":"exploded","message":"boom"}`, 1, "", "privileged op ensure-state-dirs: boom"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(Options{Sudo: fakeSudo(t, tt.reply, tt.code), ForceSudo: true})
			err := c.EnsureStateDirs(context.Background(), "/etc/x")
			var se *Error
			if !errors.As(err, &se) || err.Error() != tt.msg || isSet(err) != tt.is {
				t.Errorf("got %v (errors.Is %q), want %q (errors.Is %q)", err, isSet(err), tt.msg, tt.is)
			}
		})
	}
	c := New(Options{Sudo: fakeSudo(t, `{}`, 0), ForceSudo: true})
	if err := c.EnsureStateDirs(context.Background(), "/etc/x"); err != nil {
		t.Errorf("an empty success reply: %v", err)
	}
	c = New(Options{Sudo: fakeSudo(t, `not json`, 1), ForceSudo: true})
	if err := c.EnsureStateDirs(context.Background(), "/etc/x"); err == nil || !strings.Contains(err.Error(), "unreadable helper reply") {
		t.Errorf("garbage reply: %v", err)
	}
}

// TestServeKindsAndExitCodes runs Serve as root (SUDO_UID unset: the
// caller is root, its roots under root's home) for requests that must be
// refused or invalid: exit 2, the kind in the reply, nothing created.
func TestServeKindsAndExitCodes(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: Serve runs only as root")
	}
	t.Setenv("SUDO_UID", "")
	t.Setenv("SUDO_GID", "")
	evil := "/etc/banger-serve-test-" + fmt.Sprint(os.Getpid())
	tests := []struct {
		name, op, in, kind string
		code               int
	}{
		{"unknown op", "format-disk", `{}`, KindInvalid, 2},
		{"not json", "ensure-state-dirs", `{"dirs":`, KindInvalid, 2},
		{"unknown field", "ensure-state-dirs", `{"dirs":[],"mode":"0777"}`, KindInvalid, 2},
		{"outside the roots", "ensure-state-dirs", `{"dirs":["` + evil + `"]}`, KindRefused, 2},
		{"foreign interface", "delete-tap", `{"name":"eth0"}`, KindRefused, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			code := Serve(context.Background(), tt.op, strings.NewReader(tt.in), &out)
			var r reply
			if err := json.Unmarshal(out.Bytes(), &r); err != nil {
				t.Fatalf("reply %q: %v", out.String(), err)
			}
			if code != tt.code || r.Kind != tt.kind || r.Message == "" || strings.Contains(r.Message, "\n") {
				t.Errorf("exit %d, reply %+v; want exit %d, kind %s, a one-line message", code, r, tt.code, tt.kind)
			}
			if r.Refuse != (tt.code == 2) || r.Error != r.Message {
				t.Errorf("reply %+v lacks the older shape (error, refused)", r)
			}
		})
	}
	if _, err := os.Stat(evil); err == nil {
		os.Remove(evil)
		t.Fatalf("refused op created %s", evil)
	}
}
