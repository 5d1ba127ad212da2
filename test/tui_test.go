//go:build system

package test

import (
	"strings"
	"testing"
)

// completions runs `banger __complete ARGS...` and returns the offered
// words (descriptions dropped) and the directive line.
func (e *env) completions(args ...string) ([]string, string) {
	e.t.Helper()
	out, errOut, code := e.banger(append([]string{"__complete"}, args...)...)
	if code != 0 {
		e.t.Fatalf("__complete %v: exit %d: %s", args, code, errOut)
	}
	var words []string
	directive := ""
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.HasPrefix(l, ":") {
			directive = l
			continue
		}
		w, _, _ := strings.Cut(l, "\t")
		if w != "" {
			words = append(words, w)
		}
	}
	return words, directive
}

func TestCompletionFromRunningDaemon(t *testing.T) {
	e := newEnv(t, "")
	e.registerImage()
	e.ok("vm", "create", "alpha")
	e.ok("vm", "create", "beta", "--no-start")
	e.ok("vm", "create", "albert", "--no-start")

	words, dir := e.completions("vm", "stop", "")
	if strings.Join(words, " ") != "albert alpha beta" && !sameSet(words, []string{"alpha", "beta", "albert"}) {
		t.Fatalf("vm stop completion = %v", words)
	}
	if dir != ":4" {
		t.Fatalf("directive %q, want :4 (no file completion)", dir)
	}
	if words, _ = e.completions("vm", "stop", "al"); !sameSet(words, []string{"alpha", "albert"}) {
		t.Fatalf("vm stop al = %v", words)
	}
	// Names already given are not offered again; single-VM commands stop
	// after one.
	if words, _ = e.completions("vm", "delete", "alpha", ""); !sameSet(words, []string{"beta", "albert"}) {
		t.Fatalf("vm delete alpha <tab> = %v", words)
	}
	if words, _ = e.completions("vm", "show", "alpha", ""); len(words) != 0 {
		t.Fatalf("vm show alpha <tab> = %v", words)
	}
	if words, _ = e.completions("vm", "create", "--image", ""); !sameSet(words, []string{"debian"}) {
		t.Fatalf("--image completion = %v", words)
	}
	if words, _ = e.completions("image", "delete", ""); !sameSet(words, []string{"debian"}) {
		t.Fatalf("image delete completion = %v", words)
	}

	// With the daemon stopped, completion offers nothing and starts nothing.
	e.ok("daemon", "stop")
	if words, _ = e.completions("vm", "stop", ""); len(words) != 0 {
		t.Fatalf("completion without a daemon = %v", words)
	}
	if _, _, code := e.banger("daemon", "status"); code != 3 {
		t.Fatalf("completion started bangerd (daemon status exit %d)", code)
	}
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	m := map[string]int{}
	for _, x := range a {
		m[x]++
	}
	for _, x := range b {
		m[x]--
	}
	for _, n := range m {
		if n != 0 {
			return false
		}
	}
	return true
}

// TestProgressLines checks that create and start print their stages as
// plain lines when stderr is not a terminal, and nothing with --quiet.
func TestProgressLines(t *testing.T) {
	e := newEnv(t, "")
	e.registerImage()
	_, errOut, code := e.banger("vm", "create", "alpha")
	if code != 0 {
		t.Fatalf("create: exit %d: %s", code, errOut)
	}
	for _, stage := range []string{"storage", "network", "firecracker", "agent", "dns"} {
		if !strings.Contains(errOut, "  "+stage) {
			t.Errorf("create progress lacks %s:\n%s", stage, errOut)
		}
	}
	if strings.Contains(errOut, "\r") || strings.Contains(errOut, "\x1b") {
		t.Errorf("non-terminal progress has terminal controls: %q", errOut)
	}
	e.ok("vm", "stop", "alpha")
	_, errOut, code = e.banger("vm", "start", "alpha")
	if code != 0 || !strings.Contains(errOut, "  agent") || !strings.Contains(errOut, "  dns") {
		t.Fatalf("start progress: exit %d:\n%s", code, errOut)
	}
	_, errOut, code = e.banger("vm", "create", "--quiet", "beta")
	if code != 0 || strings.Contains(errOut, "storage") {
		t.Fatalf("create --quiet: exit %d, stderr %q", code, errOut)
	}
	e.ok("vm", "stop", "beta")
	_, errOut, code = e.banger("vm", "start", "--quiet", "beta")
	if code != 0 || strings.Contains(errOut, "agent") {
		t.Fatalf("start --quiet: exit %d, stderr %q", code, errOut)
	}
	out, errOut, code := e.banger("vm", "start", "--json", "alpha") // already running: fails, but JSON only
	if strings.Contains(errOut, "  agent") {
		t.Fatalf("start --json printed progress: %q (exit %d, %s)", errOut, code, out)
	}
}
