package dns

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// fakeWaker stands in for the daemon: a wake blocks until released (or its
// context ends), then marks the name awake the way the daemon's resume
// republishes it.
type fakeWaker struct {
	recs    *Records
	release chan struct{}
	mu      sync.Mutex
	calls   map[string]int
	started chan string
	fail    error
}

func newFakeWaker(recs *Records) *fakeWaker {
	return &fakeWaker{recs: recs, release: make(chan struct{}), calls: map[string]int{}, started: make(chan string, 16)}
}

func (f *fakeWaker) wake(ctx context.Context, name string) error {
	f.mu.Lock()
	f.calls[name]++
	f.mu.Unlock()
	f.started <- name
	select {
	case <-f.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	if f.fail != nil {
		return f.fail
	}
	ip, _ := f.recs.LookupName(name)
	f.recs.Set(name, ip)
	return nil
}

func (f *fakeWaker) count(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[name]
}

func startWakingServer(t *testing.T, maxWait time.Duration, opts ...func(*Server)) (*Server, *Records, *fakeWaker) {
	t.Helper()
	recs := NewRecords()
	recs.Set("web", netip.MustParseAddr("172.16.0.3"))
	recs.SetAsleep("dev", netip.MustParseAddr("172.16.0.2"))
	fw := newFakeWaker(recs)
	h := NewWakingHandler(NewHandler(recs, netip.MustParsePrefix("172.16.0.0/24")), recs, fw.wake, maxWait, nil)
	s := NewServer(h, nil)
	for _, o := range opts {
		o(s)
	}
	t.Cleanup(func() { _ = s.Close() })
	t.Cleanup(func() {
		select {
		case <-fw.release:
		default:
			close(fw.release)
		}
	})
	if err := s.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	return s, recs, fw
}

func asyncQuery(t *testing.T, network, addr, name string, qtype uint16) <-chan *mdns.Msg {
	ch := make(chan *mdns.Msg, 1)
	go func() {
		c := &mdns.Client{Net: network, Timeout: 20 * time.Second}
		q := new(mdns.Msg)
		q.SetQuestion(name, qtype)
		r, _, err := c.Exchange(q, addr)
		if err != nil {
			t.Errorf("%s query %s: %v", network, name, err)
		}
		ch <- r
	}()
	return ch
}

func waitStarted(t *testing.T, fw *fakeWaker, want string) {
	t.Helper()
	select {
	case got := <-fw.started:
		if got != want {
			t.Fatalf("woke %q, want %q", got, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no wake of %s started", want)
	}
}

// A query for a sleeping name waits for the wake and then answers; the
// listener answers other names meanwhile; queries sharing a name share
// one wake.
func TestWakeOnQuery(t *testing.T) {
	for _, network := range []string{"udp", "udp-netpoller", "tcp"} {
		t.Run(network, func(t *testing.T) {
			var opts []func(*Server)
			if network == "udp-netpoller" {
				network = "udp"
				opts = append(opts, func(s *Server) { s.openUDP = openPollUDP })
			}
			s, recs, fw := startWakingServer(t, time.Minute, opts...)
			addr := s.Addrs()[0]
			a := asyncQuery(t, network, addr, "dev.vm.", mdns.TypeA)
			waitStarted(t, fw, "dev")
			aaaa := asyncQuery(t, network, addr, "DEV.vm.", mdns.TypeAAAA)
			// While dev wakes, other names answer at once.
			if got := aOf(t, query(t, network, addr, "web.vm.", mdns.TypeA)); got != "172.16.0.3" {
				t.Errorf("web.vm during the wake = %s", got)
			}
			select {
			case m := <-a:
				t.Fatalf("dev.vm answered before its wake finished: %v", m)
			default:
			}
			close(fw.release)
			if got := aOf(t, <-a); got != "172.16.0.2" {
				t.Errorf("dev.vm after the wake = %s", got)
			}
			if m := <-aaaa; m == nil || m.Rcode != mdns.RcodeSuccess || len(m.Answer) != 0 {
				t.Errorf("AAAA dev.vm = %v", m)
			}
			if n := fw.count("dev"); n != 1 {
				t.Errorf("%d wakes of dev, want 1", n)
			}
			if recs.Asleep("dev") || recs.AnyAsleep() {
				t.Error("dev still marked asleep after its wake")
			}
			// Awake now: no further wake.
			if got := aOf(t, query(t, network, addr, "dev.vm.", mdns.TypeA)); got != "172.16.0.2" {
				t.Errorf("dev.vm awake = %s", got)
			}
			if n := fw.count("dev"); n != 1 {
				t.Errorf("%d wakes of dev after it was awake, want 1", n)
			}
		})
	}
}

// A wake slower than maxWait does not hold the answer back for longer: the
// address is answered and the wake goes on.
func TestWakeAnswersAfterMaxWait(t *testing.T) {
	s, recs, fw := startWakingServer(t, 100*time.Millisecond)
	addr := s.Addrs()[0]
	if got := aOf(t, query(t, "udp", addr, "dev.vm.", mdns.TypeA)); got != "172.16.0.2" {
		t.Errorf("dev.vm = %s", got)
	}
	waitStarted(t, fw, "dev")
	if !recs.Asleep("dev") {
		t.Error("dev marked awake before its wake finished")
	}
	// A second query joins the wake under way.
	if got := aOf(t, query(t, "udp", addr, "dev.vm.", mdns.TypeA)); got != "172.16.0.2" {
		t.Errorf("dev.vm again = %s", got)
	}
	if n := fw.count("dev"); n != 1 {
		t.Errorf("%d wakes, want 1 shared", n)
	}
}

// Queries that are not for a sleeping VM's name never wake anything.
func TestNoWakeForOtherQueries(t *testing.T) {
	s, _, fw := startWakingServer(t, time.Minute)
	addr := s.Addrs()[0]
	for _, q := range []struct {
		name  string
		qtype uint16
	}{
		{"web.vm.", mdns.TypeA}, {"nope.vm.", mdns.TypeA}, {"vm.", mdns.TypeSOA},
		{"2.0.16.172.in-addr.arpa.", mdns.TypePTR}, {"dev.example.com.", mdns.TypeA},
	} {
		query(t, "udp", addr, q.name, q.qtype)
	}
	if n := fw.count("dev"); n != 0 {
		t.Errorf("%d wakes of dev, want none", n)
	}
}

func TestWakingFastPath(t *testing.T) {
	recs := NewRecords()
	recs.Set("web", netip.MustParseAddr("172.16.0.3"))
	h := NewWakingHandler(NewHandler(recs, netip.MustParsePrefix("172.16.0.0/24")), recs, func(context.Context, string) error { return nil }, time.Second, nil)
	q := new(mdns.Msg)
	q.SetQuestion("web.vm.", mdns.TypeA)
	raw, err := q.Pack()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := h.AnswerWire(raw, nil); !ok {
		t.Error("no fast path with nothing asleep")
	}
	if h.MustWait(raw) {
		t.Error("MustWait for an awake name")
	}
	recs.SetAsleep("dev", netip.MustParseAddr("172.16.0.2"))
	if _, ok := h.AnswerWire(raw, nil); ok {
		t.Error("fast path taken while a VM is asleep")
	}
	q.SetQuestion("dev.vm.", mdns.TypeA)
	raw, _ = q.Pack()
	if !h.MustWait(raw) {
		t.Error("MustWait false for a sleeping name")
	}
}

func TestRecordsAsleep(t *testing.T) {
	r := NewRecords()
	ip := netip.MustParseAddr("172.16.0.2")
	r.SetAsleep("Dev", ip)
	if !r.Asleep("dev") || !r.AnyAsleep() {
		t.Fatal("SetAsleep did not mark dev")
	}
	if got, ok := r.LookupName("dev"); !ok || got != ip {
		t.Fatalf("a sleeping name must keep resolving: %v %v", got, ok)
	}
	if n, ok := r.LookupAddr(ip); !ok || n != "dev" {
		t.Fatalf("LookupAddr = %q %v", n, ok)
	}
	r.Set("dev", ip)
	if r.Asleep("dev") || r.AnyAsleep() {
		t.Fatal("Set did not wake dev")
	}
	r.SetAsleep("dev", ip)
	r.Remove("dev")
	if r.Asleep("dev") || r.AnyAsleep() {
		t.Fatal("Remove left dev asleep")
	}
	// Another name taking the address drops the old name and its mark.
	r.SetAsleep("old", ip)
	r.Set("new", ip)
	if r.Asleep("old") || r.AnyAsleep() {
		t.Fatal("old still asleep after its address went to new")
	}
	r.ReplaceAll(map[string]netip.Addr{"a": ip, "B": netip.MustParseAddr("172.16.0.9")}, map[string]bool{"B": true})
	if r.Asleep("a") || !r.Asleep("b") || !r.AnyAsleep() {
		t.Fatal("ReplaceAll marks wrong")
	}
	r.Replace(map[string]netip.Addr{"b": netip.MustParseAddr("172.16.0.9")})
	if r.AnyAsleep() {
		t.Fatal("Replace must publish everything awake")
	}
}
