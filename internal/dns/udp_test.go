package dns

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// udpImpls are the UDP listeners under test: the platform's own (on Linux
// the blocking recvmmsg readers) and the portable netpoller one.
var udpImpls = []struct {
	name string
	open func(net.IP, int) (udpListener, error)
}{{"platform", openUDP}, {"netpoller", openPollUDP}}

// forEachListener runs f against a Server on 127.0.0.1 and on ::1 (when
// the host has IPv6 loopback) for every UDP implementation.
func forEachListener(t *testing.T, h mdns.Handler, f func(t *testing.T, addr string)) {
	for _, impl := range udpImpls {
		for _, host := range []string{"127.0.0.1", "::1"} {
			t.Run(impl.name+"/"+host, func(t *testing.T) {
				s := NewServer(h, nil)
				s.openUDP = impl.open
				t.Cleanup(func() { _ = s.Close() })
				if err := s.Listen(net.JoinHostPort(host, "0")); err != nil {
					if host == "::1" {
						t.Skipf("no IPv6 loopback here: %v", err)
					}
					t.Fatal(err)
				}
				f(t, s.Addrs()[0])
			})
		}
	}
}

// exchange sends raw on conn and reads datagrams until the one with raw's
// ID (returned) or the deadline.
func exchange(t *testing.T, conn net.Conn, raw []byte) *mdns.Msg {
	t.Helper()
	m, _ := exchangeN(t, conn, raw)
	return m
}

// exchangeN is exchange, also returning the answer's wire length.
func exchangeN(t *testing.T, conn net.Conn, raw []byte) (*mdns.Msg, int) {
	t.Helper()
	if _, err := conn.Write(raw); err != nil {
		t.Fatal(err)
	}
	id := uint16(raw[0])<<8 | uint16(raw[1])
	buf := make([]byte, 65535)
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("no answer to query %d: %v", id, err)
		}
		m := new(mdns.Msg)
		if err := m.Unpack(buf[:n]); err != nil {
			t.Fatalf("unpacking an answer: %v", err)
		}
		if m.Id == id {
			return m, n
		}
	}
}

func pack(t *testing.T, m *mdns.Msg) []byte {
	t.Helper()
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestUDPListenerAnswers(t *testing.T) {
	h, _ := testHandler()
	forEachListener(t, h, func(t *testing.T, addr string) {
		conn, err := net.Dial("udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ask := func(name string, qtype uint16, edns bool) *mdns.Msg {
			q := new(mdns.Msg)
			q.SetQuestion(name, qtype)
			if edns {
				q.SetEdns0(1232, false)
			}
			return exchange(t, conn, pack(t, q))
		}
		for _, edns := range []bool{false, true} {
			if got := aOf(t, ask("dev.vm.", mdns.TypeA, edns)); got != "172.16.0.2" {
				t.Errorf("A dev.vm (edns %v) = %s", edns, got)
			}
			if m := ask("dev.vm.", mdns.TypeAAAA, edns); m.Rcode != mdns.RcodeSuccess || len(m.Answer) != 0 || len(m.Ns) != 1 {
				t.Errorf("AAAA dev.vm (edns %v) = %v", edns, m)
			}
			if m := ask("3.0.16.172.in-addr.arpa.", mdns.TypePTR, edns); len(m.Answer) != 1 || m.Answer[0].(*mdns.PTR).Ptr != "build-box.vm." {
				t.Errorf("PTR 172.16.0.3 (edns %v) = %v", edns, m.Answer)
			}
			if m := ask("nope.vm.", mdns.TypeA, edns); m.Rcode != mdns.RcodeNameError || !m.Authoritative {
				t.Errorf("nope.vm (edns %v): rcode %s", edns, mdns.RcodeToString[m.Rcode])
			}
		}
		// A header that promises a question which is not there: FORMERR,
		// with the query's ID.
		junk := []byte{0xbe, 0xef, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, 'v'}
		if m := exchange(t, conn, junk); m.Rcode != mdns.RcodeFormatError || !m.Response {
			t.Errorf("garbage: rcode %s response %v", mdns.RcodeToString[m.Rcode], m.Response)
		}
	})
}

// A datagram with QR set is a response and is never answered (that is how
// reflection loops start), on any listener.
func TestUDPListenerIgnoresResponses(t *testing.T) {
	h, _ := testHandler()
	forEachListener(t, h, func(t *testing.T, addr string) {
		conn, err := net.Dial("udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		resp := new(mdns.Msg)
		resp.SetQuestion("dev.vm.", mdns.TypeA)
		resp.Id = 4242
		resp.Response = true
		if _, err := conn.Write(pack(t, resp)); err != nil {
			t.Fatal(err)
		}
		// Queries sent after it are answered; nothing comes back for it
		// (exchange would fail on its unpacked reply only by ID, so read
		// them all here).
		buf := make([]byte, 4096)
		for i := range 3 {
			q := new(mdns.Msg)
			q.SetQuestion("dev.vm.", mdns.TypeA)
			q.Id = uint16(100 + i)
			if _, err := conn.Write(pack(t, q)); err != nil {
				t.Fatal(err)
			}
			_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			n, err := conn.Read(buf)
			if err != nil {
				t.Fatalf("query %d: %v", q.Id, err)
			}
			m := new(mdns.Msg)
			if err := m.Unpack(buf[:n]); err != nil {
				t.Fatal(err)
			}
			if m.Id != q.Id {
				t.Fatalf("got an answer with id %d, want %d (answered the response?)", m.Id, q.Id)
			}
		}
	})
}

// bigHandler answers every query with 40 TXT records, far over 512 bytes,
// and records the client address it was given.
type bigHandler struct {
	mu     sync.Mutex
	remote []string
}

func (b *bigHandler) ServeDNS(w mdns.ResponseWriter, r *mdns.Msg) {
	b.mu.Lock()
	b.remote = append(b.remote, w.RemoteAddr().String())
	b.mu.Unlock()
	m := new(mdns.Msg)
	m.SetReply(r)
	for i := range 40 {
		m.Answer = append(m.Answer, &mdns.TXT{Hdr: mdns.RR_Header{Name: r.Question[0].Name, Rrtype: mdns.TypeTXT, Class: mdns.ClassINET, Ttl: 5},
			Txt: []string{fmt.Sprintf("record %02d %s", i, strings.Repeat("x", 40))}})
	}
	if opt := r.IsEdns0(); opt != nil {
		m.SetEdns0(ednsSize, false)
	}
	_ = w.WriteMsg(m)
}

// Answers are truncated (TC set) to 512 bytes without EDNS and to the
// client's EDNS size, at most 1232; the handler sees the client's address.
func TestUDPListenerTruncatesAndKnowsThePeer(t *testing.T) {
	h := &bigHandler{}
	forEachListener(t, h, func(t *testing.T, addr string) {
		conn, err := net.Dial("udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		for _, tt := range []struct {
			edns, max int
		}{{0, 512}, {1000, 1000}, {4096, ednsSize}} {
			q := new(mdns.Msg)
			q.SetQuestion("big.vm.", mdns.TypeTXT)
			if tt.edns > 0 {
				q.SetEdns0(uint16(tt.edns), false)
			}
			m, n := exchangeN(t, conn, pack(t, q))
			if n > tt.max || n < tt.max-100 || !m.Truncated || len(m.Answer) == 0 || len(m.Answer) == 40 {
				t.Errorf("edns %d: %d bytes, TC %v, %d answers; want at most %d bytes, truncated", tt.edns, n, m.Truncated, len(m.Answer), tt.max)
			}
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		want := conn.LocalAddr().String()
		if len(h.remote) == 0 || h.remote[len(h.remote)-1] != want {
			t.Errorf("handler saw the client as %v, want %s", h.remote, want)
		}
	})
}

// Many clients at once, each on its own socket, all get their own answers.
func TestUDPListenerConcurrentClients(t *testing.T) {
	recs := NewRecords()
	for i := range 50 {
		recs.Set("vm"+strconv.Itoa(i), netip.AddrFrom4([4]byte{172, 16, 0, byte(10 + i)}))
	}
	h := NewHandler(recs, netip.MustParsePrefix("172.16.0.0/24"))
	forEachListener(t, h, func(t *testing.T, addr string) {
		var wg sync.WaitGroup
		for c := range 8 {
			wg.Go(func() {
				conn, err := net.Dial("udp", addr)
				if err != nil {
					t.Error(err)
					return
				}
				defer conn.Close()
				buf := make([]byte, 512)
				for i := range 200 {
					n := (c*7 + i) % 50
					q := new(mdns.Msg)
					q.SetQuestion(fmt.Sprintf("vm%d.vm.", n), mdns.TypeA)
					b, _ := q.Pack()
					if _, err := conn.Write(b); err != nil {
						t.Error(err)
						return
					}
					_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
					k, err := conn.Read(buf)
					if err != nil {
						t.Errorf("client %d query %d: %v", c, i, err)
						return
					}
					m := new(mdns.Msg)
					if err := m.Unpack(buf[:k]); err != nil || m.Id != q.Id || len(m.Answer) != 1 ||
						m.Answer[0].(*mdns.A).A.String() != fmt.Sprintf("172.16.0.%d", 10+n) {
						t.Errorf("client %d query vm%d: %v %v", c, n, m, err)
						return
					}
				}
			})
		}
		wg.Wait()
	})
}

// threads is this process's thread count.
func threads(t *testing.T) int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Threads:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return -1
}

// Close wakes the readers blocked in the kernel and returns promptly,
// leaving no goroutine and (Linux) no thread behind, however many times a
// server is opened and closed.
func TestUDPListenerCloseLeavesNothing(t *testing.T) {
	old := udpReaders
	udpReaders = 4 // more readers than cores: a leak would show at once
	t.Cleanup(func() { udpReaders = old })
	h, _ := testHandler()
	cycle := func() {
		s := NewServer(h, nil)
		if err := s.Listen("127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if err := s.Listen("[::1]:0"); err != nil {
			t.Logf("no IPv6 loopback: %v", err)
		}
		for _, a := range s.Addrs() {
			if got := aOf(t, query(t, "udp", a, "dev.vm.", mdns.TypeA)); got != "172.16.0.2" {
				t.Fatalf("%s: dev.vm = %s", a, got)
			}
		}
		done := make(chan error, 1)
		go func() { done <- s.Close() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("Close did not return within 20 s: readers still blocked")
		}
	}
	cycle() // the runtime's own threads and goroutines settle here
	goroutines, thr := runtime.NumGoroutine(), threads(t)
	for range 5 {
		cycle()
	}
	// Exited goroutines may take a moment to be counted out.
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > goroutines && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > goroutines {
		buf := make([]byte, 1<<16)
		t.Fatalf("%d goroutines after 5 more servers, %d before:\n%s", n, goroutines, buf[:runtime.Stack(buf, true)])
	}
	// 5 leaking servers would leave 20 or 40 threads; allow the runtime a few.
	if n := threads(t); thr > 0 && n > thr+3 {
		t.Errorf("%d threads after 5 more servers, %d before", n, thr)
	}
}
