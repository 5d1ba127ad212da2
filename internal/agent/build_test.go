package agent

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestAgentBinaryIsStatic builds cmd/banger-agent the way the runtime bundle
// does and checks it is a static linux executable under 10 MB: it runs in
// guests that may have no libc at all.
func TestAgentBinaryIsStatic(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary; skipped with -short")
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("needs the go tool")
	}
	bin := filepath.Join(t.TempDir(), "banger-agent")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version=test", "-o", bin, "../../cmd/banger-agent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building banger-agent: %v\n%s", err, out)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("banger-agent has a %v program header: not statically linked", p.Type)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("banger-agent imports %v", libs)
	}
	fi, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() >= 10<<20 {
		t.Errorf("banger-agent is %d bytes, want < 10 MB", fi.Size())
	}
	t.Logf("banger-agent: %d bytes, static", fi.Size())
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil || string(out) != "banger-agent test\n" {
		t.Errorf("banger-agent --version = %q, %v", out, err)
	}
}
