package firecracker

import (
	"bufio"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/procwatch"
)

func TestFindByAPISocket(t *testing.T) {
	dir := shortDir(t)
	sock := filepath.Join(dir, "api.sock")
	other := filepath.Join(dir, "other.sock")
	p := launchHelper(t, "sleep", LaunchSpec{APISock: sock, ID: "vm-find"})

	tests := []struct {
		sock string
		want int
	}{
		{sock, p.Pid()},
		{sock + "x", 0},
		{strings.TrimSuffix(sock, ".sock"), 0},
		{other, 0},
		{"vm-find", 0}, // the value of --id, not of --api-sock
	}
	for _, tt := range tests {
		got, err := FindByAPISocket(tt.sock)
		if err != nil {
			t.Fatal(err)
		}
		if got != tt.want {
			t.Errorf("FindByAPISocket(%q) = %d, want %d", tt.sock, got, tt.want)
		}
	}
	if !Alive(p.Pid(), sock) || !Alive(p.Pid(), "") {
		t.Error("Alive = false for the live helper")
	}
	if Alive(p.Pid(), other) {
		t.Error("Alive(pid, other socket) = true")
	}
	if Alive(os.Getpid(), sock) {
		t.Error("Alive(test pid, sock) = true")
	}

	// Adopt refuses a pid whose command line names another socket, and
	// leaves the process alone.
	w := testWatcher(t)
	if _, err := Adopt(w, p.Pid(), other); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Adopt with the wrong socket: %v, want ErrNotRunning", err)
	}
	if _, err := Adopt(w, os.Getpid(), sock); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Adopt of the test process: %v, want ErrNotRunning", err)
	}
	if w.Len() != 0 {
		t.Errorf("refused adoptions left %d processes watched", w.Len())
	}
	if !Alive(p.Pid(), sock) {
		t.Fatal("helper died from a refused Adopt")
	}
	if err := p.Kill(); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	select {
	case <-p.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("helper still running after Kill")
	}
	if got, _ := FindByAPISocket(sock); got != 0 {
		t.Errorf("FindByAPISocket after exit = %d, want 0", got)
	}
	if Alive(p.Pid(), sock) {
		t.Error("Alive after exit")
	}
	if err := p.Kill(); !errors.Is(err, procwatch.ErrGone) {
		t.Errorf("Kill after exit: %v, want ErrGone", err)
	}
	if _, err := Adopt(w, p.Pid(), sock); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Adopt after exit: %v, want ErrNotRunning", err)
	}
	if _, err := FindByAPISocket(""); err == nil {
		t.Error("FindByAPISocket(\"\"): no error")
	}
}

// A killed child that nobody has reaped yet is a zombie: it must not count
// as a running Firecracker, nor be adopted as one.
func TestZombieDoesNotCount(t *testing.T) {
	exe, _ := os.Executable()
	sock := filepath.Join(shortDir(t), "api.sock")
	null, _ := os.Open(os.DevNull)
	defer null.Close()
	p, err := os.StartProcess(exe, append([]string{exe}, Args(LaunchSpec{APISock: sock, ID: "z"})...), &os.ProcAttr{
		Env:   append(os.Environ(), helperEnv+"=sleep"),
		Files: []*os.File{null, null, null},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Kill(); p.Wait() })
	waitFor(t, "helper to run", 5*time.Second, func() bool { return Alive(p.Pid, sock) })
	if err := p.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "zombie state", 5*time.Second, func() bool { return procState(p.Pid) == "Z" })
	if got, _ := FindByAPISocket(sock); got != 0 {
		t.Errorf("FindByAPISocket found zombie %d", got)
	}
	if Alive(p.Pid, "") {
		t.Error("Alive(zombie) = true")
	}
	if _, err := Adopt(testWatcher(t), p.Pid, sock); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Adopt(zombie): %v, want ErrNotRunning", err)
	}
}

func procState(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	s := string(b)
	return strings.Fields(s[strings.LastIndexByte(s, ')')+1:])[0]
}

// startGrandchild starts `sleep 30` as a child of a shell (not of the test
// process, so it cannot be waited for) and returns its pid. The shell reaps
// it; the test reaps the shell.
func startGrandchild(t *testing.T) int {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	null, _ := os.Open(os.DevNull)
	defer null.Close()
	sh, err := os.StartProcess("/bin/sh", []string{"sh", "-c", "sleep 30 <&- >/dev/null 2>&1 & echo $!; exec >&-; wait"}, &os.ProcAttr{
		Files: []*os.File{null, w, null},
	})
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(pid, syscall.SIGKILL)
		sh.Wait()
	})
	return pid
}

// An adopted process that is not our child: its exit is noticed through the
// pidfd (status unknown) and the kill goes through the pidfd too.
func TestAdoptNonChild(t *testing.T) {
	pid := startGrandchild(t)
	if !Alive(pid, "") {
		t.Fatalf("grandchild %d not alive", pid)
	}
	p, err := testWatcher(t).Adopt(pid, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.Child() {
		t.Error("a grandchild adopted as a child")
	}
	select {
	case <-p.Done():
		t.Fatal("Done closed for a live process")
	case <-time.After(100 * time.Millisecond):
	}
	if err := p.Kill(); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	select {
	case <-p.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("exit not noticed")
	}
	if st := p.Status(); st.Known {
		t.Errorf("status of a non-child %+v claims to be known", st)
	}
	waitFor(t, "grandchild reaped by its shell", 5*time.Second, func() bool { return !Alive(pid, "") })
}

func TestAdoptGonePid(t *testing.T) {
	// A pid from a process that has been reaped: nothing to adopt.
	p, err := os.StartProcess("/bin/true", []string{"true"}, &os.ProcAttr{})
	if err != nil {
		t.Fatal(err)
	}
	p.Wait()
	if _, err := Adopt(testWatcher(t), p.Pid, "/x.sock"); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Adopt(gone pid): %v, want ErrNotRunning", err)
	}
}

func TestExitedDetail(t *testing.T) {
	dir := shortDir(t)
	sock := filepath.Join(dir, "api.sock")
	console := filepath.Join(dir, "console.log")
	p := launchHelper(t, "sleep", LaunchSpec{APISock: sock, ID: "vm-poll", ConsolePath: console})
	exited := Exited(p, console, filepath.Join(dir, "missing.log"))
	if dead, _ := exited(); dead {
		t.Fatal("Exited reports a live process dead")
	}
	waitFor(t, "console output", 5*time.Second, func() bool {
		b, _ := os.ReadFile(console)
		return strings.Contains(string(b), "helper stderr line")
	})
	p.Kill()
	<-p.Done()
	dead, why := exited()
	if !dead {
		t.Fatal("Exited reports a dead process alive")
	}
	mustContain(t, why, "killed by signal SIGKILL", "console.log: ", "helper stderr line")
	if strings.Contains(why, "missing.log") {
		t.Errorf("a missing file is quoted: %q", why)
	}
}
