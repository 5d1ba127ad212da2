package firecracker

import (
	"bufio"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestFindByAPISocket(t *testing.T) {
	dir := shortDir(t)
	sock := filepath.Join(dir, "api.sock")
	other := filepath.Join(dir, "other.sock")
	p, e := launchHelper(t, "sleep", LaunchSpec{APISock: sock, ID: "vm-find"})

	tests := []struct {
		sock string
		want int
	}{
		{sock, p.Pid},
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
	if !Alive(p.Pid, sock) || !Alive(p.Pid, "") {
		t.Error("Alive = false for the live helper")
	}
	if Alive(p.Pid, other) {
		t.Error("Alive(pid, other socket) = true")
	}
	if Alive(os.Getpid(), sock) {
		t.Error("Alive(test pid, sock) = true")
	}

	// Kill refuses a pid whose command line names another socket.
	if err := Kill(p.Pid, other, syscall.SIGKILL); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Kill with the wrong socket: %v, want ErrNotRunning", err)
	}
	if !Alive(p.Pid, sock) {
		t.Fatal("helper died from a refused Kill")
	}
	if err := Kill(p.Pid, sock, syscall.SIGKILL); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	select {
	case <-e.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("helper still running after Kill")
	}
	if got, _ := FindByAPISocket(sock); got != 0 {
		t.Errorf("FindByAPISocket after exit = %d, want 0", got)
	}
	if Alive(p.Pid, sock) {
		t.Error("Alive after exit")
	}
	if err := Kill(p.Pid, sock, syscall.SIGKILL); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Kill after exit: %v, want ErrNotRunning", err)
	}
	if _, err := FindByAPISocket(""); err == nil {
		t.Error("FindByAPISocket(\"\"): no error")
	}
}

// A killed child that nobody has reaped yet is a zombie: it must not count
// as a running Firecracker, and WaitExit must treat it as gone.
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
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	if err := WaitExit(ctx, p.Pid); err != nil {
		t.Errorf("WaitExit(zombie): %v", err)
	}
	if err := waitExitPoll(ctx, p.Pid); err != nil {
		t.Errorf("waitExitPoll(zombie): %v", err)
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

func TestWaitExitNonChild(t *testing.T) {
	for _, tt := range []struct {
		name string
		wait func(context.Context, int) error
	}{
		{"pidfd", WaitExit},
		{"proc polling", waitExitPoll},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pid := startGrandchild(t)
			if !Alive(pid, "") {
				t.Fatalf("grandchild %d not alive", pid)
			}
			start := time.Now()
			ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
			defer cancel()
			if err := tt.wait(ctx, pid); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("WaitExit on a live process: %v, want context.DeadlineExceeded", err)
			}
			if took := time.Since(start); took < 100*time.Millisecond || took > 2*time.Second {
				t.Errorf("gave up after %s, want about 100ms", took)
			}

			time.AfterFunc(100*time.Millisecond, func() { syscall.Kill(pid, syscall.SIGTERM) })
			ctx, cancel = context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			start = time.Now()
			if err := tt.wait(ctx, pid); err != nil {
				t.Fatalf("WaitExit: %v", err)
			}
			if took := time.Since(start); took > 2*time.Second {
				t.Errorf("exit noticed after %s", took)
			}
			if Alive(pid, "") {
				t.Error("Alive after WaitExit")
			}
		})
	}
}

func TestWaitExitGonePid(t *testing.T) {
	// A pid from a process that has been reaped: the pidfd cannot be opened.
	p, err := os.StartProcess("/bin/true", []string{"true"}, &os.ProcAttr{})
	if err != nil {
		t.Fatal(err)
	}
	p.Wait()
	if err := WaitExit(t.Context(), p.Pid); err != nil {
		t.Errorf("WaitExit(gone pid): %v", err)
	}
}

func TestPollExited(t *testing.T) {
	dir := shortDir(t)
	sock := filepath.Join(dir, "api.sock")
	console := filepath.Join(dir, "console.log")
	p, e := launchHelper(t, "sleep", LaunchSpec{APISock: sock, ID: "vm-poll", ConsolePath: console})
	exited := PollExited(p.Pid, sock, console)
	if dead, _ := exited(); dead {
		t.Fatal("PollExited reports a live process dead")
	}
	waitFor(t, "console output", 5*time.Second, func() bool {
		b, _ := os.ReadFile(console)
		return strings.Contains(string(b), "helper stderr line")
	})
	p.Signal(syscall.SIGKILL)
	<-e.Done()
	dead, why := exited()
	if !dead {
		t.Fatal("PollExited reports a dead process alive")
	}
	mustContain(t, why, strconv.Itoa(p.Pid), "helper stderr line")
}
