package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/store"
)

// fakeForwards is a stateful forwardBackend: a host of addresses that are
// free, taken by other programs or held by the manager, and guests whose
// listeners the test sets.
type fakeForwards struct {
	mu    sync.Mutex
	taken map[string]bool      // addresses other programs hold
	open  map[string]*fakeHeld // addresses the manager holds
	next  int                  // the next port ":0" gets
	ls    map[string][]api.GuestListener
	err   map[string]error // listeners() fails for these VMs
}

type fakeHeld struct {
	b      *fakeForwards
	addr   *net.TCPAddr
	key    string
	guest  int
	closed bool
}

func newFakeForwards() *fakeForwards {
	return &fakeForwards{taken: map[string]bool{}, open: map[string]*fakeHeld{}, next: 40000,
		ls: map[string][]api.GuestListener{}, err: map[string]error{}}
}

func (b *fakeForwards) listen(_ context.Context, addr string, _ fwdVM, guest int) (heldListener, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if port == "0" {
		port = strconv.Itoa(b.next)
		b.next++
	}
	key := net.JoinHostPort(host, port)
	if b.taken[key] || b.open[key] != nil {
		return nil, fmt.Errorf("listening on %s: %w", key, syscall.EADDRINUSE)
	}
	n, _ := strconv.Atoi(port)
	h := &fakeHeld{b: b, addr: &net.TCPAddr{IP: net.ParseIP(host), Port: n}, key: key, guest: guest}
	b.open[key] = h
	return h, nil
}

func (b *fakeForwards) listeners(_ context.Context, vm fwdVM) ([]api.GuestListener, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.err[vm.ID]; err != nil {
		return nil, err
	}
	return slices.Clone(b.ls[vm.ID]), nil
}

// held lists the held addresses with their guest ports, sorted.
func (b *fakeForwards) held() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for k, h := range b.open {
		out = append(out, fmt.Sprintf("%s>%d", k, h.guest))
	}
	slices.Sort(out)
	return out
}

func (h *fakeHeld) Addr() *net.TCPAddr { return h.addr }
func (h *fakeHeld) Conns() int         { return 0 }
func (h *fakeHeld) Close() error {
	h.b.mu.Lock()
	defer h.b.mu.Unlock()
	if h.closed {
		return fmt.Errorf("closed twice")
	}
	h.closed = true
	delete(h.b.open, h.key)
	return nil
}

type eventLog struct {
	mu  sync.Mutex
	evs []api.Event
}

func (l *eventLog) add(ev api.Event) { l.mu.Lock(); l.evs = append(l.evs, ev); l.mu.Unlock() }

func (l *eventLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, ev := range l.evs {
		out = append(out, ev.Stage+" "+ev.Message)
	}
	l.evs = nil
	return out
}

func newTestForwarder(auto bool) (*forwarder, *fakeForwards, *eventLog) {
	b := newFakeForwards()
	ev := &eventLog{}
	return newForwarder(b, auto, slog.New(slog.DiscardHandler), ev.add), b, ev
}

func lst(addr string, port int) api.GuestListener {
	return api.GuestListener{Proto: "tcp", Addr: addr, Port: port}
}

func TestForwarderAuto(t *testing.T) {
	m, b, ev := newTestForwarder(true)
	vm := fwdVM{ID: "v1", Name: "dev"}
	b.taken["127.0.0.1:8080"] = true
	m.applyListeners(vm, 100, []api.GuestListener{
		lst("0.0.0.0", 8080), lst("127.0.0.1", 22), lst("172.16.0.2", 9000), lst("::1", 3000), lst("::", 3000), lst("0.0.0.0", 80),
	}, "")
	want := []string{"127.0.0.1:3000>3000", "127.0.0.1:40000>80", "127.0.0.1:40001>8080"}
	if got := b.held(); !slices.Equal(got, want) {
		t.Fatalf("held %q, want %q (no ssh, no eth0-only listener; a taken and a privileged port get free ones)", got, want)
	}
	fs := m.list(vm.ID)
	if len(fs) != 3 || fs[0].GuestPort != 80 || fs[0].Requested != 80 || !strings.Contains(fs[0].Note, "privileged; chose 40000") ||
		fs[2].GuestPort != 8080 || fs[2].HostPort != 40001 || !strings.Contains(fs[2].Note, "host port 8080 is taken; chose 40001") ||
		fs[1].HostPort != 3000 || fs[1].Requested != 0 || fs[1].Note != "" {
		t.Fatalf("list = %+v", fs)
	}
	if got := ev.take(); len(got) != 3 || !strings.HasPrefix(got[0], "open ") || !strings.Contains(strings.Join(got, "\n"), "127.0.0.1:3000 -> dev:3000 (auto)") {
		t.Fatalf("events %q", got)
	}

	// An agent that cannot answer closes nothing; a listener that went
	// away closes its forward.
	m.applyListeners(vm, 100, nil, "the agent does not answer")
	if len(b.held()) != 3 {
		t.Fatalf("an unanswered poll closed forwards: %q", b.held())
	}
	if _, note, ok := m.guestListeners(vm.ID); !ok || note == "" {
		t.Errorf("note not kept: %q %v", note, ok)
	}
	m.applyListeners(vm, 100, []api.GuestListener{lst("0.0.0.0", 8080), lst("0.0.0.0", 80)}, "")
	if got := b.held(); !slices.Equal(got, []string{"127.0.0.1:40000>80", "127.0.0.1:40001>8080"}) {
		t.Fatalf("after 3000 closed: %q", got)
	}
	if got := ev.take(); len(got) != 1 || !strings.HasPrefix(got[0], "close 127.0.0.1:3000") {
		t.Fatalf("events %q", got)
	}

	// A new process behind the VM (a restart the manager missed) starts over.
	m.applyListeners(vm, 101, []api.GuestListener{lst("0.0.0.0", 5000)}, "")
	if got := b.held(); !slices.Equal(got, []string{"127.0.0.1:5000>5000"}) {
		t.Fatalf("after restart: %q", got)
	}
	// A list older than the record does not close it; a newer one does.
	before := time.Now().Add(-time.Hour)
	m.forget(map[string]int{"other": 5}, before)
	if got := b.held(); len(got) != 1 {
		t.Fatalf("forget with a list older than the forwards closed them: %q", got)
	}
	if m.startPoll(vm, 100) {
		t.Fatal("a poll for the vm's old process started")
	}
	if !m.startPoll(vm, 101) || m.startPoll(vm, 101) {
		t.Fatal("startPoll does not mark a poll under way")
	}
	m.endPoll(vm.ID)
	m.forget(map[string]int{"other": 5}, time.Now())
	if got := b.held(); len(got) != 0 || m.list(vm.ID) != nil {
		t.Fatalf("forget of a stopped vm left %q", got)
	}
}

func TestForwarderAutoOff(t *testing.T) {
	m, b, _ := newTestForwarder(false)
	vm := fwdVM{ID: "v1", Name: "dev"}
	m.applyListeners(vm, 1, []api.GuestListener{lst("0.0.0.0", 8080)}, "")
	if got := b.held(); len(got) != 0 {
		t.Fatalf("auto_forward off held %q", got)
	}
	if ls, _, ok := m.guestListeners(vm.ID); !ok || len(ls) != 1 {
		t.Errorf("listeners not recorded: %+v", ls)
	}
}

func TestForwarderPublished(t *testing.T) {
	m, b, ev := newTestForwarder(true)
	vm := fwdVM{ID: "v1", Name: "web"}
	pubs := []store.Published{
		{VMID: "v1", HostAddr: "127.0.0.1", HostPort: 8080, GuestPort: 80},
		{VMID: "v1", HostAddr: "127.0.0.1", HostPort: 9090, GuestPort: 9090},
	}
	b.taken["127.0.0.1:9090"] = true
	opened := m.holdPublished(vm, 7, pubs)
	if len(opened) != 1 || opened[0].Host() != "127.0.0.1:8080" {
		t.Fatalf("opened %+v", opened)
	}
	fs := m.list(vm.ID)
	if len(fs) != 2 || fs[1].HostPort != 0 || fs[1].Requested != 9090 || !strings.Contains(fs[1].Error, "127.0.0.1:9090 is taken by another program") {
		t.Fatalf("list = %+v", fs)
	}
	// A published guest port is not auto-forwarded a second time.
	m.applyListeners(vm, 7, []api.GuestListener{lst("0.0.0.0", 80), lst("0.0.0.0", 9090)}, "")
	if got := b.held(); !slices.Equal(got, []string{"127.0.0.1:8080>80"}) {
		t.Fatalf("held %q", got)
	}
	// The taken port is retried once it is free.
	delete(b.taken, "127.0.0.1:9090")
	if opened := m.holdPublished(vm, 7, pubs); len(opened) != 1 || opened[0].HostPort != 9090 {
		t.Fatalf("retry opened %+v", opened)
	}
	if fs := m.list(vm.ID); fs[1].Error != "" || fs[1].HostPort != 9090 || fs[1].Requested != 0 {
		t.Fatalf("after retry %+v", fs[1])
	}
	ev.take()
	// Unpublishing closes it; a later poll does not reopen it.
	m.holdPublished(vm, 7, pubs[1:])
	if got := b.held(); !slices.Equal(got, []string{"127.0.0.1:9090>9090"}) {
		t.Fatalf("after unpublish %q", got)
	}
	m.applyListeners(vm, 7, []api.GuestListener{lst("0.0.0.0", 80)}, "")
	if got := b.held(); !slices.Equal(got, []string{"127.0.0.1:40000>80", "127.0.0.1:9090>9090"}) {
		t.Fatalf("after unpublish the guest's 80 is auto-forwarded: %q", got)
	}
	if got := ev.take(); len(got) != 2 || !strings.HasPrefix(got[0], "close 127.0.0.1:8080") || !strings.HasPrefix(got[1], "open 127.0.0.1:40000") {
		t.Fatalf("events %q", got)
	}

	m.closeVM(vm.ID, "vm stopped")
	if got := b.held(); len(got) != 0 {
		t.Fatalf("closeVM left %q", got)
	}
	m.holdPublished(vm, 8, pubs)
	m.closeAll()
	if got := b.held(); len(got) != 0 {
		t.Fatalf("closeAll left %q", got)
	}
	if opened := m.holdPublished(vm, 8, pubs); opened != nil || len(b.held()) != 0 {
		t.Fatalf("opened after closeAll: %+v", opened)
	}
}

func TestWantedAuto(t *testing.T) {
	pub := []*heldForward{{f: api.Forward{GuestPort: 443}}}
	got := wantedAuto([]api.GuestListener{lst("0.0.0.0", 443), lst("::", 8080), lst("127.0.0.1", 8080), lst("192.168.1.5", 25), lst("", 7), lst("0.0.0.0", 0), lst("127.0.0.53", 53), lst("127.0.0.54", 53)}, pub)
	if !slices.Equal(got, []int{7, 8080}) {
		t.Errorf("wantedAuto = %v", got)
	}
}

// A suspended VM keeps its forwards through the teardown that closes a
// VM's forwards; polls leave them; the process it is restored to takes them
// over unchanged; a stop of the suspended VM closes them.
func TestForwarderSleepThrough(t *testing.T) {
	m, b, _ := newTestForwarder(true)
	vm := fwdVM{ID: "v1", Name: "web"}
	pubs := []store.Published{{VMID: "v1", HostAddr: "127.0.0.1", HostPort: 8080, GuestPort: 80}}
	m.holdPublished(vm, 7, pubs)
	m.applyListeners(vm, 7, []api.GuestListener{lst("127.0.0.1", 3000)}, "")
	want := []string{"127.0.0.1:3000>3000", "127.0.0.1:8080>80"}
	if got := b.held(); !slices.Equal(got, want) {
		t.Fatalf("held %q", got)
	}
	m.sleepThrough(vm.ID, func() { m.closeVM(vm.ID, "vm stopped") }) // suspend's teardown
	if got := b.held(); !slices.Equal(got, want) {
		t.Fatalf("suspended: held %q, want %q", got, want)
	}
	m.forget(map[string]int{}, time.Now()) // a poll: the VM does not run
	if got := b.held(); !slices.Equal(got, want) {
		t.Fatalf("a poll closed a sleeping vm's forwards: %q", got)
	}
	held := b.open["127.0.0.1:8080"]
	if opened := m.holdPublished(vm, 9, pubs); len(opened) != 0 || b.open["127.0.0.1:8080"] != held {
		t.Fatalf("the restored process reopened the forward (opened %+v)", opened)
	}
	m.forget(map[string]int{"v1": 9}, time.Now().Add(time.Second))
	if got := b.held(); !slices.Equal(got, want) {
		t.Fatalf("restored: held %q, want %q", got, want)
	}
	m.sleepThrough(vm.ID, func() { m.closeVM(vm.ID, "vm stopped") })
	m.closeVM(vm.ID, "vm stopped") // vm stop of the suspended vm
	if got := b.held(); len(got) != 0 {
		t.Fatalf("stop of a suspended vm left %q", got)
	}
}

// The poll queue runs every queued poll once, at most pollWorkers at a
// time, on at most pollWorkers goroutines however many VMs are queued, and
// leaves none behind once the queue is empty.
func TestPollQueue(t *testing.T) {
	var mu sync.Mutex
	ran := map[string]int{}
	running, most := 0, 0
	release := make(chan struct{})
	q := &pollQueue{run: func(vm store.VM) {
		mu.Lock()
		ran[vm.ID]++
		running++
		most = max(most, running)
		mu.Unlock()
		<-release
		mu.Lock()
		running--
		mu.Unlock()
	}}
	var vms []store.VM
	for i := range 500 {
		vms = append(vms, store.VM{ID: fmt.Sprintf("vm%d", i)})
	}
	before := goroutinesCreated()
	q.add(context.Background(), vms[:250])
	q.add(context.Background(), vms[250:])
	close(release)
	q.wg.Wait()
	// pollWorkers for the queue, with room for what earlier tests left
	// running; a goroutine per VM would be 500.
	if created := goroutinesCreated() - before; created > 2*pollWorkers {
		t.Errorf("500 polls started %d goroutines, want about %d", created, pollWorkers)
	}
	if most > pollWorkers || most == 0 {
		t.Errorf("%d polls ran at once, want 1 to %d", most, pollWorkers)
	}
	for _, vm := range vms {
		if ran[vm.ID] != 1 {
			t.Fatalf("%s polled %d times, want once", vm.ID, ran[vm.ID])
		}
	}
	if q.workers != 0 || q.queue != nil {
		t.Fatalf("after the queue emptied: %d workers, %d queued", q.workers, len(q.queue))
	}
	// Queued after the workers ended: new ones start.
	q.add(context.Background(), []store.VM{{ID: "late"}})
	q.wg.Wait()
	if ran["late"] != 1 {
		t.Fatal("a poll queued after the workers had ended did not run")
	}
	// Once the context ends, what is queued is dropped.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	q.add(ctx, []store.VM{{ID: "dropped"}})
	q.wg.Wait()
	if ran["dropped"] != 0 {
		t.Fatal("a poll queued after the context ended ran")
	}
}

func goroutinesCreated() uint64 {
	s := []metrics.Sample{{Name: "/sched/goroutines-created:goroutines"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}
