//go:build system

package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// TestConcurrentOnDemandStart: two commands that need the daemon, run at
// once with none running, end with exactly one bangerd.
func TestConcurrentOnDemandStart(t *testing.T) {
	bins := buildBinaries(t)
	dir, err := os.MkdirTemp("/tmp", "bond-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	env := []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + dir,
		"BANGER_STATE_DIR=" + filepath.Join(dir, "s"),
		"XDG_RUNTIME_DIR=" + filepath.Join(dir, "r"),
		"BANGER_CONFIG=" + filepath.Join(dir, "none.toml"),
		"BANGER_DNS_LISTEN_ADDR=127.0.0.1:42198",
	}
	run := func(args ...string) (string, error) {
		cmd := exec.Command(bins.banger, args...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	defer run("daemon", "stop")
	for round := range 3 {
		var wg sync.WaitGroup
		errs := make([]error, 4)
		outs := make([]string, 4)
		for i := range 4 {
			wg.Add(1)
			go func() { defer wg.Done(); outs[i], errs[i] = run("vm", "list") }()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d: vm list %d: %v: %s", round, i, err, outs[i])
			}
		}
		daemons := countDaemons(bins.bangerd, dir)
		if daemons != 1 {
			t.Fatalf("round %d: %d bangerd processes, want 1", round, daemons)
		}
		started := 0
		for _, o := range outs {
			if strings.Contains(o, "starting it") {
				started++
			}
		}
		if round == 0 && started == 0 {
			t.Fatal("no command said it started the daemon")
		}
		if out, err := run("daemon", "stop"); err != nil {
			t.Fatalf("daemon stop: %v: %s", err, out)
		}
	}
}

// countDaemons counts live bangerd processes whose environment names dir.
func countDaemons(bin, dir string) int {
	n := 0
	ents, _ := os.ReadDir("/proc")
	for _, ent := range ents {
		var pid int
		if _, err := fmt.Sscanf(ent.Name(), "%d", &pid); err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !strings.HasPrefix(string(b), bin+"\x00") || !alive(pid) {
			continue
		}
		env, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if strings.Contains(string(env), dir) {
			n++
		}
	}
	return n
}
