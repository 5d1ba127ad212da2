package hostops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	osuser "os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestSudoSeam installs the helper with `make install-helper` for a
// throwaway unprivileged user and runs the client side of the seam as that
// user through real sudo.
func TestSudoSeam(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a test user and a sudoers drop-in")
	}
	for _, tool := range []string{"sudo", "useradd", "userdel", "runuser", "visudo", "make"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (CI installs it)", tool)
		}
	}
	modRoot := moduleRoot(t)
	suffix := fmt.Sprintf("%d", time.Now().UnixNano()%1000000)
	user := "bgt" + suffix
	base, err := os.MkdirTemp("/tmp", "bangersudo-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	home := filepath.Join(base, "home")
	if out, err := exec.Command("useradd", "-m", "-d", home, "-s", "/bin/sh", user).CombinedOutput(); err != nil {
		t.Fatalf("useradd: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("userdel", "-r", user).Run() })
	helperDir := filepath.Join(base, "libexec")
	sudoers := "/etc/sudoers.d/banger-test-" + suffix
	t.Cleanup(func() { os.Remove(sudoers) })
	mk := exec.Command("make", "-s", "-C", modRoot, "install-helper", "HELPER_DIR="+helperDir, "SUDOERS_FILE="+sudoers, "HELPER_USER="+user)
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("make install-helper: %v: %s", err, out)
	}
	rule, err := os.ReadFile(sudoers)
	if err != nil || !strings.Contains(string(rule), user+" ALL=(root) NOPASSWD: "+helperDir+"/banger internal *") {
		t.Fatalf("sudoers drop-in: %q %v", rule, err)
	}
	// Run this test binary's client half as the unprivileged user.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(base, "hostops.test")
	copyFile(t, self, bin, 0o755)
	results := filepath.Join(base, "results.json")
	if err := os.WriteFile(results, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if u, err := osuser.Lookup(user); err != nil {
		t.Fatal(err)
	} else if uid, _ := strconv.Atoi(u.Uid); os.Chown(results, uid, -1) != nil {
		t.Fatal("chowning the results file")
	}
	cmd := exec.Command("runuser", "-u", user, "--", "env", "HOME="+home, "BANGER_SUDO_CLIENT="+helperDir+"/banger",
		"BANGER_SUDO_RESULTS="+results, bin, "-test.run=^TestSudoClientHalf$", "-test.v", "-test.count=1")
	out, err := cmd.CombinedOutput()
	t.Logf("client half:\n%s", out)
	if err != nil {
		t.Fatalf("client half as %s failed: %v", user, err)
	}
	if !strings.Contains(string(out), "--- PASS: TestSudoClientHalf") {
		t.Fatal("client half did not run")
	}
	fi, err := os.Stat(filepath.Join(home, ".local", "state", "banger", "vms"))
	if err != nil {
		t.Fatalf("helper did not create the state dir: %v", err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Fatalf("state dir mode %v, want 0700", fi.Mode().Perm())
	}

	// The same calls in-process, for the same roots: the same messages
	// and the same errors.Is answers as through sudo.
	raw, err := os.ReadFile(results)
	if err != nil {
		t.Fatal(err)
	}
	var viaSudo []seamResult
	if err := json.Unmarshal(raw, &viaSudo); err != nil {
		t.Fatalf("client half results %q: %v", raw, err)
	}
	// In-process the caller is the same user the helper derives from
	// SUDO_UID, so both modes judge the same roots for the same owner.
	u, err := osuser.Lookup(user)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	local := New(Options{Roots: UserRoots(home)})
	local.caller = Caller{UID: uid, GID: gid, Roots: UserRoots(home)}
	inProc := runSeamCases(local, home)
	if len(viaSudo) != len(inProc) {
		t.Fatalf("%d results through sudo, %d in-process", len(viaSudo), len(inProc))
	}
	for i, want := range seamCases(home) {
		s, p := viaSudo[i], inProc[i]
		if s.Msg != p.Msg || s.Is != p.Is || p.Is != want.is {
			t.Errorf("%s:\n through sudo %q (errors.Is %q)\n in-process   %q (errors.Is %q)\n want errors.Is %q", want.name, s.Msg, s.Is, p.Msg, p.Is, want.is)
		}
		if !strings.HasPrefix(p.Msg, "privileged op "+want.op+": ") || strings.Count(p.Msg, "privileged op") != 1 || strings.Contains(p.Msg, "\n") {
			t.Errorf("%s: %q must be one line naming the op once", want.name, p.Msg)
		}
	}
	if _, err := os.Stat("/etc/banger-evil"); err == nil {
		t.Fatal("refused op created /etc/banger-evil")
	}
}

// seamCase is one failing call the sudo test makes through both modes.
type seamCase struct {
	name, op string
	args     any
	is       string // the sentinels errors.Is must find (isSet)
}

func seamCases(home string) []seamCase {
	state := filepath.Join(home, ".local", "state", "banger", "vms") // the user's own directory
	return []seamCase{
		{"outside the roots", "ensure-state-dirs", StateDirsArgs{Dirs: []string{"/etc/banger-evil"}}, "refused"},
		{"foreign interface", "delete-tap", map[string]string{"name": "eth0"}, "refused"},
		{"unknown op", "format-disk", struct{}{}, "refused,invalid"},
		{"unknown field", "ensure-state-dirs", map[string]any{"dirs": []string{}, "mode": "0777"}, "refused,invalid"},
		{"missing file", "loop-attach", LoopAttachArgs{Path: filepath.Join(state, "missing.img"), ReadOnly: true}, "not_found"},
		{"no such dm device", "dm-chown", DMNameArgs{Name: "banger-seamtest-missing"}, "not_found"},
	}
}

type seamResult struct{ Msg, Is string }

func runSeamCases(c *Client, home string) []seamResult {
	var out []seamResult
	for _, sc := range seamCases(home) {
		err := c.call(context.Background(), sc.op, sc.args, nil)
		r := seamResult{Is: isSet(err)}
		if err != nil {
			r.Msg = err.Error()
		}
		out = append(out, r)
	}
	return out
}

// TestSudoClientHalf runs only when TestSudoSeam starts it as the test user.
func TestSudoClientHalf(t *testing.T) {
	helper := os.Getenv("BANGER_SUDO_CLIENT")
	if helper == "" {
		t.Skip("runs only as the unprivileged half of TestSudoSeam")
	}
	if os.Geteuid() == 0 {
		t.Fatal("client half must not run as root")
	}
	home := os.Getenv("HOME")
	cl := New(Options{HelperPath: helper})
	if cl.Mode() != "sudo" {
		t.Fatalf("mode %s, want sudo", cl.Mode())
	}
	ctx := context.Background()
	state := filepath.Join(home, ".local", "state", "banger", "vms")
	// The daemon makes its own state directory, as the user; the helper
	// only ever works beneath it.
	if err := os.MkdirAll(filepath.Dir(state), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := cl.EnsureStateDirs(ctx, state); err != nil {
		t.Fatalf("allowed op through sudo: %v", err)
	}
	if err := cl.EnsureStateDirs(ctx, "/etc/banger-evil"); !errors.Is(err, ErrRefused) {
		t.Fatalf("path outside the state dir: %v, want ErrRefused", err)
	}
	if _, err := os.Stat("/etc/banger-evil"); err == nil {
		t.Fatal("refused op created /etc/banger-evil")
	}
	if err := cl.call(ctx, "delete-tap", map[string]string{"name": "eth0"}, nil); !errors.Is(err, ErrRefused) {
		t.Fatalf("foreign interface through sudo: %v, want ErrRefused", err)
	}
	// NAT outside the caller's subnets: refused before anything is changed
	// (the test user has no bridge; the helper only reads the interfaces).
	if err := cl.NATAdd(ctx, netip.MustParseAddr("8.8.8.8")); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "not inside the subnet") {
		t.Fatalf("nat-add 8.8.8.8 through sudo: %v, want ErrRefused", err)
	}
	if _, err := cl.NATEnsure(ctx, "banger0", netip.MustParsePrefix("0.0.0.0/0")); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "not a banger bridge of uid") {
		t.Fatalf("nat-ensure 0.0.0.0/0 through sudo: %v, want ErrRefused", err)
	}
	res, _ := json.Marshal(runSeamCases(cl, home))
	if err := os.WriteFile(os.Getenv("BANGER_SUDO_RESULTS"), res, 0o600); err != nil {
		t.Fatal(err)
	}
	// A helper the sudoers rule does not name fails with the drop-in hint.
	bad := New(Options{HelperPath: "/usr/bin/true"})
	err := bad.EnsureStateDirs(ctx, state)
	if err == nil || !strings.Contains(err.Error(), SudoersPath) {
		t.Fatalf("unlisted helper: %v, want an error naming %s", err, SudoersPath)
	}
	// The raw helper: its exit code and reply carry the kind (and the
	// older refused flag).
	for _, tc := range []struct {
		op   string
		args any
		kind string
		code int
	}{
		{"ensure-state-dirs", StateDirsArgs{Dirs: []string{"/etc/x"}}, KindRefused, 2},
		{"format-disk", struct{}{}, KindInvalid, 2},
		{"loop-attach", LoopAttachArgs{Path: filepath.Join(state, "missing.img")}, KindNotFound, 1},
	} {
		raw, _ := json.Marshal(tc.args)
		c := exec.Command("sudo", "-n", helper, "internal", tc.op)
		c.Stdin = strings.NewReader(string(raw))
		out, err := c.Output()
		var r reply
		if jerr := json.Unmarshal(out, &r); jerr != nil || r.Kind != tc.kind || r.Refuse != (tc.code == 2) || exitCode(err) != tc.code {
			t.Errorf("%s: exit %d, raw reply %q (%v); want exit %d, kind %s", tc.op, exitCode(err), out, jerr, tc.code, tc.kind)
		}
	}
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

func moduleRoot(t *testing.T) string {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dst, mode)
}
