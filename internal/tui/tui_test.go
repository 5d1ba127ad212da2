package tui

import (
	"bytes"
	"context"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/x/ansi"

	"banger/internal/api"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

var testNow = time.Date(2025, 3, 4, 15, 0, 0, 0, time.UTC)

func testVMs() []api.VM {
	base := "/home/dev/.local/state/banger/vms/"
	mk := func(id, name, state, ip string, vcpu, mem int, nat bool, started, used time.Duration) api.VM {
		v := api.VM{ID: id, Name: name, State: state, IP: ip, VCPU: vcpu, MemoryMiB: mem, NAT: nat, Image: "debian",
			DNSName: name + ".vm", CID: 3, Dir: base + id, RootDisk: base + id + "/root.cow", WorkDisk: base + id + "/work.ext4",
			VsockPath: base + id + "/v.sock", APISocket: base + id + "/fc.sock", StorageDriver: "copy",
			DiskBytes: 8 << 30, WorkDiskBytes: 16 << 30, CreatedAt: testNow.Add(-72 * time.Hour)}
		if state == api.StateRunning {
			v.PID = 4000 + vcpu
			v.StartedAt = testNow.Add(-started)
		}
		if used > 0 {
			v.LastUsedAt = testNow.Add(-used)
		}
		return v
	}
	alpha := mk("a1f3c2d4", "alpha", api.StateRunning, "172.16.0.2", 2, 2048, true, 2*time.Hour+13*time.Minute, 5*time.Minute)
	alpha.Dir = "testdata/vm-alpha"
	beta := mk("b7e21a90", "beta", api.StateRunning, "172.16.0.3", 1, 1024, false, 12*time.Minute, 0)
	beta.CID = 4
	gamma := mk("c90d44e1", "gamma", api.StateStopped, "172.16.0.4", 4, 8192, false, 0, 26*time.Hour)
	gamma.CID, gamma.StopReason = 5, "stopped by the guest"
	broken := mk("d00dfeed", "broken", api.StateError, "172.16.0.5", 1, 512, false, 0, 0)
	broken.CID, broken.LastError = 6, "firecracker exited during boot: kvm: permission denied"
	return []api.VM{alpha, beta, gamma, broken}
}

// harness drives a Model the way tea.Program does: it runs commands in
// goroutines and feeds their messages back through Update.
type harness struct {
	t    *testing.T
	m    *Model
	msgs chan tea.Msg
	quit bool
}

func newHarness(t *testing.T, d Daemon, w, h int) *harness {
	t.Helper()
	hs := &harness{t: t, msgs: make(chan tea.Msg, 256)}
	hs.m = New(d, Options{NoColor: true, Now: func() time.Time { return testNow }, StatsInterval: time.Hour})
	hs.handle(tea.WindowSizeMsg{Width: w, Height: h})
	hs.exec(hs.m.Init())
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go Pump(ctx, d, 10*time.Millisecond, func(msg tea.Msg) {
		select {
		case hs.msgs <- msg:
		case <-ctx.Done():
		}
	})
	hs.settle()
	return hs
}

func (h *harness) exec(cmd tea.Cmd) {
	if cmd == nil {
		return
	}
	go func() {
		if msg := cmd(); msg != nil {
			h.msgs <- msg
		}
	}()
}

func (h *harness) handle(msg tea.Msg) {
	switch msg := msg.(type) {
	case tea.BatchMsg:
		for _, c := range msg {
			h.exec(c)
		}
		return
	case tea.QuitMsg:
		h.quit = true
		return
	}
	_, cmd := h.m.Update(msg)
	h.exec(cmd)
}

// settle handles messages until none arrives for a while.
func (h *harness) settle() {
	for {
		select {
		case msg := <-h.msgs:
			h.handle(msg)
		case <-time.After(150 * time.Millisecond):
			return
		}
	}
}

// waitFor handles messages until the screen satisfies cond.
func (h *harness) waitFor(what string, cond func(screen string) bool) {
	h.t.Helper()
	deadline := time.After(5 * time.Second)
	for !cond(h.screen()) {
		select {
		case msg := <-h.msgs:
			h.handle(msg)
		case <-deadline:
			h.t.Fatalf("timed out waiting for %s; screen:\n%s", what, h.screen())
		}
	}
}

func (h *harness) press(keys ...string) {
	for _, k := range keys {
		h.handle(keyMsg(k))
	}
	h.settle()
}

func (h *harness) typeText(s string) {
	for _, r := range s {
		h.handle(tea.KeyPressMsg{Code: r, Text: string(r)})
	}
	h.settle()
}

func keyMsg(k string) tea.KeyPressMsg {
	switch k {
	case "enter":
		return tea.KeyPressMsg{Code: tea.KeyEnter}
	case "esc":
		return tea.KeyPressMsg{Code: tea.KeyEscape}
	case "tab":
		return tea.KeyPressMsg{Code: tea.KeyTab}
	case "down":
		return tea.KeyPressMsg{Code: tea.KeyDown}
	case "up":
		return tea.KeyPressMsg{Code: tea.KeyUp}
	case "backspace":
		return tea.KeyPressMsg{Code: tea.KeyBackspace}
	}
	r := []rune(k)[0]
	if r >= 'A' && r <= 'Z' {
		return tea.KeyPressMsg{Code: r + ('a' - 'A'), Text: k, Mod: tea.ModShift}
	}
	return tea.KeyPressMsg{Code: r, Text: k}
}

func (h *harness) screen() string { return h.m.View().Content }

// row returns the table line of a VM (empty if not shown).
func (h *harness) row(name string) string {
	for _, l := range strings.Split(h.screen(), "\n") {
		f := strings.Fields(strings.TrimPrefix(l, "> "))
		if len(f) > 0 && f[0] == name {
			return l
		}
	}
	return ""
}

func (h *harness) selectVM(name string) {
	h.t.Helper()
	h.press("g")
	for i := 0; i < 10 && !strings.HasPrefix(h.row(name), "> "); i++ {
		h.press("j")
	}
	if !strings.HasPrefix(h.row(name), "> ") {
		h.t.Fatalf("cannot select %s:\n%s", name, h.screen())
	}
}

func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading golden (run with -update to create it): %v", err)
	}
	if got != string(want) {
		t.Errorf("%s differs (rerun with -update if intended)\n--- got ---\n%s\n--- want ---\n%s", name, got, want)
	}
}

func checkFits(t *testing.T, screen string, w, h int) {
	t.Helper()
	lines := strings.Split(screen, "\n")
	if len(lines) != h {
		t.Errorf("screen has %d lines, want %d", len(lines), h)
	}
	for i, l := range lines {
		if got := ansi.StringWidth(l); got > w {
			t.Errorf("line %d is %d cells wide (> %d): %q", i, got, w, l)
		}
	}
}

func TestScreenGolden(t *testing.T) {
	for _, tc := range []struct {
		w, h int
		want []string // on screen
		not  []string // not on screen (columns dropped at this width)
	}{
		{80, 24, []string{"NAME", "STATE", "HEALTH", "CPU%", "RSS", "healthy", "alpha login:"}, []string{"LAST USED", "DNS"}},
		{120, 40, []string{"IMAGE", "UPTIME", "LAST USED", "NAT", "2h13m", "5m0s ago", "alpha.vm", "Linux version 6.1.0"}, nil},
	} {
		name := "screen_" + itoa(tc.w) + "x" + itoa(tc.h) + ".golden"
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, newFake(testNow, testVMs()...), tc.w, tc.h)
			h.waitFor("health and log", func(s string) bool {
				return strings.Contains(s, "healthy (agent") && strings.Contains(s, "login:")
			})
			s := h.screen()
			for _, w := range tc.want {
				if !strings.Contains(s, w) {
					t.Errorf("screen lacks %q", w)
				}
			}
			for _, w := range tc.not {
				if strings.Contains(s, w) {
					t.Errorf("screen has %q at %dx%d", w, tc.w, tc.h)
				}
			}
			if strings.Contains(s, "\x1b") {
				t.Errorf("NO_COLOR screen has escape sequences: %q", s)
			}
			checkFits(t, s, tc.w, tc.h)
			checkGolden(t, name, s)
		})
	}
}

func itoa(n int) string { return strings.TrimSpace(strings.Repeat(" ", 0) + fmtInt(n)) }

func fmtInt(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for n > 0 {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
	}
	return string(b)
}

func TestEventUpdatesRowWithoutKeypress(t *testing.T) {
	f := newFake(testNow, testVMs()...)
	h := newHarness(t, f, 80, 24)
	if !strings.Contains(h.row("gamma"), "stopped") {
		t.Fatalf("gamma row before: %q", h.row("gamma"))
	}
	g := testVMs()[2]
	g.State, g.PID, g.StartedAt = api.StateRunning, 4321, testNow
	f.emit(g) // another client started it
	h.waitFor("gamma running", func(string) bool { return strings.Contains(h.row("gamma"), "running") })
	h.waitFor("gamma healthy", func(string) bool { return strings.Contains(h.row("gamma"), "healthy") })

	// A VM created elsewhere appears; a deleted one goes.
	f.mu.Lock()
	f.publish(api.Event{Kind: api.EventVMDeleted, VMID: "d00dfeed"})
	f.mu.Unlock()
	h.waitFor("broken gone", func(string) bool { return h.row("broken") == "" })
}

func TestStopAndDeleteAskFirst(t *testing.T) {
	f := newFake(testNow, testVMs()...)
	h := newHarness(t, f, 80, 24)
	h.selectVM("beta")

	h.press("x")
	if !strings.Contains(h.screen(), "stop beta? [y/N]") {
		t.Fatalf("no stop confirmation:\n%s", h.screen())
	}
	h.press("n")
	if !strings.Contains(h.screen(), "stop beta cancelled") {
		t.Fatalf("no cancel message:\n%s", h.screen())
	}
	for _, c := range f.Calls() {
		if strings.HasPrefix(c, api.MethodVMStop) {
			t.Fatalf("stop was called without confirmation: %v", f.Calls())
		}
	}
	h.press("x", "y")
	h.waitFor("beta stopped", func(s string) bool {
		return strings.Contains(h.row("beta"), "stopped") && strings.Contains(s, "stopped beta")
	})

	h.press("d")
	if !strings.Contains(h.screen(), "delete beta and its disks? [y/N]") {
		t.Fatalf("no delete confirmation:\n%s", h.screen())
	}
	h.press("esc")
	if h.row("beta") == "" {
		t.Fatal("beta deleted without confirmation")
	}
	h.press("d", "y")
	h.waitFor("beta gone", func(string) bool { return h.row("beta") == "" })
	want := []string{"vm.stop b7e21a90", "vm.delete b7e21a90"}
	var got []string
	for _, c := range f.Calls() {
		if strings.HasPrefix(c, "vm.stop") || strings.HasPrefix(c, "vm.delete") || strings.HasPrefix(c, "vm.kill") {
			got = append(got, c)
		}
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("calls = %v, want %v", got, want)
	}
}

func TestKillConfirmsAndErrorsShowInStatus(t *testing.T) {
	f := newFake(testNow, testVMs()...)
	f.fail[api.MethodVMKill] = &api.Error{Message: "vm alpha is busy: stopping", Data: api.ErrorData{Kind: api.KindBusy}}
	h := newHarness(t, f, 80, 24)
	h.selectVM("alpha")
	h.press("K")
	if !strings.Contains(h.screen(), "kill alpha? [y/N]") {
		t.Fatalf("no kill confirmation:\n%s", h.screen())
	}
	h.press("y")
	h.waitFor("error in status line", func(s string) bool {
		return strings.Contains(s, "error: kill alpha: vm alpha is busy: stopping")
	})
	if !strings.Contains(h.row("alpha"), "running") {
		t.Fatalf("alpha row after failed kill: %q", h.row("alpha"))
	}
}

func TestFilterNarrowsRows(t *testing.T) {
	h := newHarness(t, newFake(testNow, testVMs()...), 80, 24)
	h.press("/")
	h.typeText("amm")
	if h.row("gamma") == "" || h.row("alpha") != "" || h.row("beta") != "" {
		t.Fatalf("filter amm:\n%s", h.screen())
	}
	h.press("backspace", "backspace", "backspace")
	h.typeText("running")
	if h.row("alpha") == "" || h.row("beta") == "" || h.row("gamma") != "" || h.row("broken") != "" {
		t.Fatalf("filter running:\n%s", h.screen())
	}
	h.press("enter")
	if !strings.Contains(h.screen(), `filter: "running" (2 shown`) {
		t.Fatalf("filter not shown in title:\n%s", h.screen())
	}
	// Keys act on the filtered selection.
	if !strings.HasPrefix(h.row("alpha"), "> ") {
		t.Fatalf("selection not on first filtered row:\n%s", h.screen())
	}
	h.press("esc")
	if h.row("gamma") == "" || h.row("broken") == "" {
		t.Fatalf("esc did not clear the filter:\n%s", h.screen())
	}
	h.press("/")
	h.typeText("nothing-like-this")
	if !strings.Contains(h.screen(), `no vm matches "nothing-like-this"`) {
		t.Fatalf("empty filter result:\n%s", h.screen())
	}
}

func TestResizeRelayouts(t *testing.T) {
	h := newHarness(t, newFake(testNow, testVMs()...), 80, 24)
	checkFits(t, h.screen(), 80, 24)
	if strings.Contains(h.screen(), "IMAGE") {
		t.Fatalf("80 columns should drop IMAGE:\n%s", h.screen())
	}
	for _, sz := range [][2]int{{120, 40}, {60, 15}, {200, 50}, {80, 24}} {
		h.handle(tea.WindowSizeMsg{Width: sz[0], Height: sz[1]})
		checkFits(t, h.screen(), sz[0], sz[1])
	}
	h.handle(tea.WindowSizeMsg{Width: 120, Height: 40})
	if !strings.Contains(h.screen(), "IMAGE") || !strings.Contains(h.screen(), "LAST USED") {
		t.Fatalf("120 columns should show IMAGE and LAST USED:\n%s", h.screen())
	}
}

func TestScrollKeepsSelectionVisible(t *testing.T) {
	var vms []api.VM
	for i := 0; i < 30; i++ {
		vms = append(vms, api.VM{ID: "id" + fmtInt(100+i), Name: "vm" + fmtInt(100+i), State: api.StateStopped, VCPU: 1, MemoryMiB: 256})
	}
	h := newHarness(t, newFake(testNow, vms...), 80, 24)
	h.press("G")
	if !strings.HasPrefix(h.row("vm129"), "> ") {
		t.Fatalf("last vm not selected and shown:\n%s", h.screen())
	}
	if h.row("vm100") != "" {
		t.Fatalf("did not scroll:\n%s", h.screen())
	}
	checkFits(t, h.screen(), 80, 24)
}

func TestStartRestartAndNAT(t *testing.T) {
	f := newFake(testNow, testVMs()...)
	h := newHarness(t, f, 80, 24)
	h.selectVM("gamma")
	h.press("s")
	h.waitFor("gamma started", func(s string) bool {
		return strings.Contains(h.row("gamma"), "running") && strings.Contains(s, "started gamma")
	})
	h.press("n")
	h.waitFor("nat on", func(s string) bool { return strings.Contains(s, "enabled nat on gamma") })
	h.handle(tea.WindowSizeMsg{Width: 120, Height: 40})
	if f := strings.Fields(h.row("gamma")); len(f) < 10 || !strings.Contains(h.row("gamma"), " on ") {
		t.Fatalf("gamma row at 120 cols lacks nat on: %q", h.row("gamma"))
	}
	h.press("r")
	h.waitFor("restarted", func(s string) bool { return strings.Contains(s, "restarted gamma") })
	calls := strings.Join(f.Calls(), "\n")
	for _, want := range []string{"vm.start c90d44e1", "vm.set c90d44e1 nat=true", "vm.restart c90d44e1"} {
		if !strings.Contains(calls, want) {
			t.Errorf("no call %q in\n%s", want, calls)
		}
	}
}

func TestCreateForm(t *testing.T) {
	f := newFake(testNow, testVMs()...)
	h := newHarness(t, f, 80, 24)
	h.press("c")
	if !strings.Contains(h.screen(), "create a vm") {
		t.Fatalf("no form:\n%s", h.screen())
	}
	h.typeText("delta")
	h.press("tab", "tab")
	h.typeText("lots")
	h.press("tab", "enter")
	if !strings.Contains(h.screen(), `vcpu "lots": use a whole number from 1 to 32`) {
		t.Fatalf("bad vcpu not reported:\n%s", h.screen())
	}
	h.press("up")
	for range 4 {
		h.press("backspace")
	}
	h.typeText("2")
	h.press("tab")
	h.typeText("512")
	h.press("enter")
	h.waitFor("delta created", func(s string) bool {
		return strings.Contains(h.row("delta"), "running") && strings.Contains(s, "created delta")
	})
	if !strings.Contains(strings.Join(f.Calls(), "\n"), "vm.create name=delta image= vcpu=2 mem=512") {
		t.Fatalf("create call: %v", f.Calls())
	}
	if !strings.HasPrefix(h.row("delta"), "> ") {
		t.Fatalf("new vm not selected:\n%s", h.screen())
	}
}

// standIn is a stand-in for `banger vm ssh NAME`: it writes to the
// terminal it is given and records that it ran.
type standIn struct {
	name   string
	out    io.Writer
	ran    chan string
	stdinS bool
}

func (s *standIn) Run() error {
	io.WriteString(s.out, "\nSTAND-IN SSH "+s.name+"\n")
	s.ran <- s.name
	return nil
}
func (s *standIn) SetStdin(r io.Reader)  { s.stdinS = r != nil }
func (s *standIn) SetStdout(w io.Writer) { s.out = w }
func (s *standIn) SetStderr(io.Writer)   {}

// syncBuffer is a bytes.Buffer safe for the program's writer goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestSSHSuspendsAndResumes(t *testing.T) {
	f := newFake(testNow, testVMs()...)
	ran := make(chan string, 1)
	opts := Options{NoColor: true, Now: func() time.Time { return testNow }, StatsInterval: time.Hour,
		SSH: func(name string, done func(error) tea.Msg) tea.Cmd {
			return tea.Exec(&standIn{name: name, ran: ran}, func(err error) tea.Msg { return done(err) })
		}}
	m := New(f, opts)
	inR, inW := io.Pipe()
	defer inW.Close()
	var out syncBuffer
	p := tea.NewProgram(m, tea.WithInput(inR), tea.WithOutput(&out), tea.WithWindowSize(80, 24), tea.WithoutSignals(), tea.WithEnvironment([]string{"TERM=xterm-256color", "NO_COLOR=1"}))
	type result struct {
		m   tea.Model
		err error
	}
	done := make(chan result, 1)
	go func() {
		fm, err := p.Run()
		done <- result{fm, err}
	}()
	waitCalls := func(what string, ok func([]string) bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !ok(f.Calls()) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s; calls %v", what, f.Calls())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	healthCalls := func(c []string) int {
		n := 0
		for _, x := range c {
			if x == "vm.health a1f3c2d4" {
				n++
			}
		}
		return n
	}
	waitCalls("initial health", func(c []string) bool { return healthCalls(c) == 1 })
	p.Send(tea.KeyPressMsg{Code: tea.KeyEnter}) // alpha is selected first
	select {
	case name := <-ran:
		if name != "alpha" {
			t.Fatalf("ssh ran for %q, want alpha", name)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ssh stand-in never ran")
	}
	// Back in the UI: the model asks vm.health for the reminder.
	waitCalls("health after ssh", func(c []string) bool { return healthCalls(c) == 2 })
	time.Sleep(100 * time.Millisecond)
	p.Quit()
	var r result
	select {
	case r = <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("program did not quit")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	fm := r.m.(*Model)
	if want := "alpha is still running (healthy); stop it with x or `banger vm stop alpha`"; fm.status != want {
		t.Fatalf("status after ssh = %q, want %q", fm.status, want)
	}
	o := out.String()
	i := strings.Index(o, "STAND-IN SSH alpha")
	if i < 0 {
		t.Fatalf("stand-in output missing:\n%q", o)
	}
	// The program left the alternate screen before running ssh and came
	// back to it afterwards.
	before, after := o[:i], o[i:]
	if !strings.Contains(before, "\x1b[?1049l") || !strings.Contains(after, "\x1b[?1049h") {
		t.Fatalf("no suspend/resume around ssh:\nbefore: %q\nafter: %q", tail(before, 200), tail(after, 200))
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func TestSSHNeedsRunningVM(t *testing.T) {
	h := newHarness(t, newFake(testNow, testVMs()...), 80, 24)
	h.m.opts.SSH = func(string, func(error) tea.Msg) tea.Cmd { t.Fatal("ssh ran for a stopped vm"); return nil }
	h.selectVM("gamma")
	h.press("enter")
	if !strings.Contains(h.screen(), "gamma is stopped; start it with s first") {
		t.Fatalf("screen:\n%s", h.screen())
	}
}

func TestIEC(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{{0, "0 B"}, {1023, "1023 B"}, {1024, "1 KiB"}, {1536, "1.5 KiB"}, {256 << 20, "256 MiB"}, {8 << 30, "8 GiB"}, {3 << 40, "3 TiB"}} {
		if got := iec(tc.n); got != tc.want {
			t.Errorf("iec(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
}
