package dns

import (
	"fmt"
	"net"
	"net/netip"
	"testing"

	mdns "github.com/miekg/dns"
)

// recorder is a ResponseWriter that packs what the handler writes, as the
// server would, and keeps the last reply.
type recorder struct {
	buf []byte
	msg *mdns.Msg
	err error
}

func (r *recorder) LocalAddr() net.Addr         { return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53} }
func (r *recorder) RemoteAddr() net.Addr        { return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5353} }
func (r *recorder) Write(b []byte) (int, error) { r.buf = append(r.buf[:0], b...); return len(b), nil }
func (r *recorder) Close() error                { return nil }
func (r *recorder) TsigStatus() error           { return nil }
func (r *recorder) TsigTimersOnly(bool)         {}
func (r *recorder) Hijack()                     {}
func (r *recorder) WriteMsg(m *mdns.Msg) error {
	r.msg = m
	r.buf, r.err = m.PackBuffer(r.buf[:cap(r.buf)])
	return r.err
}

func testHandler() (*Handler, *Records) {
	recs := NewRecords()
	recs.Set("dev", netip.MustParseAddr("172.16.0.2"))
	recs.Set("Build-Box", netip.MustParseAddr("172.16.0.3"))
	return NewHandler(recs, netip.MustParsePrefix("172.16.0.0/24")), recs
}

func ask(t *testing.T, h *Handler, name string, qtype uint16) *mdns.Msg {
	t.Helper()
	q := new(mdns.Msg)
	q.SetQuestion(name, qtype)
	rec := &recorder{}
	h.ServeDNS(rec, q)
	if rec.err != nil {
		t.Fatalf("packing reply to %s: %v", name, rec.err)
	}
	got := new(mdns.Msg)
	if err := got.Unpack(rec.buf); err != nil {
		t.Fatalf("unpacking reply to %s: %v", name, err)
	}
	if got.Id != q.Id || !got.Response {
		t.Fatalf("reply id %d response %v; want id %d, response", got.Id, got.Response, q.Id)
	}
	return got
}

func TestHandler(t *testing.T) {
	h, _ := testHandler()
	tests := []struct {
		name   string
		qname  string
		qtype  uint16
		rcode  int
		aa     bool
		answer string // "" = no answer
		soa    string // owner of the SOA expected in authority, "" = none
	}{
		{"A", "dev.vm.", mdns.TypeA, mdns.RcodeSuccess, true, "172.16.0.2", ""},
		{"A mixed case", "DeV.Vm.", mdns.TypeA, mdns.RcodeSuccess, true, "172.16.0.2", ""},
		{"A name set in mixed case", "build-box.vm.", mdns.TypeA, mdns.RcodeSuccess, true, "172.16.0.3", ""},
		{"ANY gives A", "dev.vm.", mdns.TypeANY, mdns.RcodeSuccess, true, "172.16.0.2", ""},
		{"NXDOMAIN", "nope.vm.", mdns.TypeA, mdns.RcodeNameError, true, "", "vm."},
		{"NXDOMAIN below a name", "x.dev.vm.", mdns.TypeA, mdns.RcodeNameError, true, "", "vm."},
		{"NODATA AAAA", "dev.vm.", mdns.TypeAAAA, mdns.RcodeSuccess, true, "", "vm."},
		{"NODATA MX", "dev.vm.", mdns.TypeMX, mdns.RcodeSuccess, true, "", "vm."},
		{"apex SOA", "vm.", mdns.TypeSOA, mdns.RcodeSuccess, true, "soa", ""},
		{"apex A NODATA", "vm.", mdns.TypeA, mdns.RcodeSuccess, true, "", "vm."},
		{"REFUSED outside", "example.com.", mdns.TypeA, mdns.RcodeRefused, false, "", ""},
		{"REFUSED suffix lookalike", "devvm.", mdns.TypeA, mdns.RcodeRefused, false, "", ""},
		{"REFUSED root", ".", mdns.TypeNS, mdns.RcodeRefused, false, "", ""},
		{"PTR", "2.0.16.172.in-addr.arpa.", mdns.TypePTR, mdns.RcodeSuccess, true, "dev.vm.", ""},
		{"PTR upper", "3.0.16.172.IN-ADDR.ARPA.", mdns.TypePTR, mdns.RcodeSuccess, true, "build-box.vm.", ""},
		{"PTR unknown guest", "9.0.16.172.in-addr.arpa.", mdns.TypePTR, mdns.RcodeNameError, true, "", "0.16.172.in-addr.arpa."},
		{"PTR malformed", "x.0.16.172.in-addr.arpa.", mdns.TypePTR, mdns.RcodeNameError, true, "", "0.16.172.in-addr.arpa."},
		{"PTR leading zero", "02.0.16.172.in-addr.arpa.", mdns.TypePTR, mdns.RcodeNameError, true, "", "0.16.172.in-addr.arpa."},
		{"PTR NODATA", "2.0.16.172.in-addr.arpa.", mdns.TypeA, mdns.RcodeSuccess, true, "", "0.16.172.in-addr.arpa."},
		{"PTR outside cidr", "2.1.16.172.in-addr.arpa.", mdns.TypePTR, mdns.RcodeRefused, false, "", ""},
		{"reverse apex SOA", "0.16.172.in-addr.arpa.", mdns.TypeSOA, mdns.RcodeSuccess, true, "soa", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := ask(t, h, tt.qname, tt.qtype)
			if m.Rcode != tt.rcode || m.Authoritative != tt.aa || m.RecursionAvailable {
				t.Fatalf("rcode %s aa %v ra %v; want %s aa %v ra false", mdns.RcodeToString[m.Rcode], m.Authoritative, m.RecursionAvailable, mdns.RcodeToString[tt.rcode], tt.aa)
			}
			if len(m.Question) != 1 || m.Question[0].Name != tt.qname {
				t.Fatalf("question %v; want the query's %s", m.Question, tt.qname)
			}
			switch {
			case tt.answer == "":
				if len(m.Answer) != 0 {
					t.Fatalf("answer %v; want none", m.Answer)
				}
			case len(m.Answer) != 1:
				t.Fatalf("answer %v; want one record", m.Answer)
			default:
				rr := m.Answer[0]
				if rr.Header().Name != tt.qname || rr.Header().Ttl != TTL {
					t.Errorf("answer owner %s ttl %d; want %s ttl %d", rr.Header().Name, rr.Header().Ttl, tt.qname, TTL)
				}
				switch v := rr.(type) {
				case *mdns.A:
					if v.A.String() != tt.answer {
						t.Errorf("A %s; want %s", v.A, tt.answer)
					}
				case *mdns.PTR:
					if v.Ptr != tt.answer {
						t.Errorf("PTR %s; want %s", v.Ptr, tt.answer)
					}
				case *mdns.SOA:
					if tt.answer != "soa" {
						t.Errorf("unexpected SOA answer")
					}
				default:
					t.Errorf("answer %T", rr)
				}
			}
			if tt.soa == "" {
				if len(m.Ns) != 0 {
					t.Errorf("authority %v; want none", m.Ns)
				}
			} else if len(m.Ns) != 1 || m.Ns[0].Header().Name != tt.soa || m.Ns[0].Header().Rrtype != mdns.TypeSOA {
				t.Errorf("authority %v; want the SOA of %s", m.Ns, tt.soa)
			}
		})
	}
}

func TestHandlerMalformed(t *testing.T) {
	h, _ := testHandler()
	noQuestion := new(mdns.Msg)
	twoQuestions := new(mdns.Msg)
	twoQuestions.Question = []mdns.Question{{Name: "dev.vm.", Qtype: mdns.TypeA, Qclass: mdns.ClassINET}, {Name: "vm.", Qtype: mdns.TypeSOA, Qclass: mdns.ClassINET}}
	update := new(mdns.Msg)
	update.SetUpdate("vm.")
	response := new(mdns.Msg)
	response.SetQuestion("dev.vm.", mdns.TypeA)
	response.Response = true
	chaos := new(mdns.Msg)
	chaos.SetQuestion("version.bind.", mdns.TypeTXT)
	chaos.Question[0].Qclass = mdns.ClassCHAOS
	badVers := new(mdns.Msg)
	badVers.SetQuestion("dev.vm.", mdns.TypeA)
	badVers.SetEdns0(4096, false)
	badVers.IsEdns0().SetVersion(1)
	edns := new(mdns.Msg)
	edns.SetQuestion("dev.vm.", mdns.TypeA)
	edns.SetEdns0(4096, true)

	tests := []struct {
		name  string
		q     *mdns.Msg
		rcode int
	}{
		{"no question", noQuestion, mdns.RcodeFormatError},
		{"two questions", twoQuestions, mdns.RcodeFormatError},
		{"update", update, mdns.RcodeNotImplemented},
		{"a response", response, mdns.RcodeFormatError},
		{"chaos class", chaos, mdns.RcodeRefused},
		{"edns version 1", badVers, mdns.RcodeBadVers},
		{"edns", edns, mdns.RcodeSuccess},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{}
			h.ServeDNS(rec, tt.q)
			if rec.err != nil {
				t.Fatalf("packing: %v", rec.err)
			}
			m := new(mdns.Msg)
			if err := m.Unpack(rec.buf); err != nil {
				t.Fatal(err)
			}
			if m.Rcode != tt.rcode {
				t.Fatalf("rcode %s; want %s", mdns.RcodeToString[m.Rcode], mdns.RcodeToString[tt.rcode])
			}
			if tt.q.IsEdns0() != nil && m.IsEdns0() == nil {
				t.Error("EDNS query answered without OPT")
			}
		})
	}
}

func TestRecords(t *testing.T) {
	r := NewRecords()
	a, b := netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.3")
	r.Set("One", a)
	if ip, ok := r.LookupName("one"); !ok || ip != a {
		t.Fatalf("LookupName(one) = %v %v", ip, ok)
	}
	if n, ok := r.LookupAddr(a); !ok || n != "one" {
		t.Fatalf("LookupAddr = %q %v", n, ok)
	}
	// Moving a name frees its old address; reusing an address drops the old name.
	r.Set("one", b)
	if _, ok := r.LookupAddr(a); ok {
		t.Error("old address still maps to a name")
	}
	r.Set("two", b)
	if _, ok := r.LookupName("one"); ok {
		t.Error("name of a reused address still resolves")
	}
	r.Remove("TWO")
	r.Remove("never-there")
	if r.Len() != 0 {
		t.Fatalf("Len = %d after removing all", r.Len())
	}
	r.Replace(map[string]netip.Addr{"x": a, "Y": b})
	if r.Len() != 2 {
		t.Fatalf("Len = %d after Replace", r.Len())
	}
	if n, ok := r.LookupAddr(b); !ok || n != "y" {
		t.Fatalf("LookupAddr after Replace = %q %v", n, ok)
	}
}

func TestReverseZone(t *testing.T) {
	tests := map[string]string{
		"172.16.0.0/24": "0.16.172.in-addr.arpa.",
		"10.1.0.0/20":   "1.10.in-addr.arpa.",
		"10.0.0.0/8":    "10.in-addr.arpa.",
		"10.0.0.0/4":    "in-addr.arpa.",
	}
	for p, want := range tests {
		if got := ReverseZone(netip.MustParsePrefix(p)); got != want {
			t.Errorf("ReverseZone(%s) = %s; want %s", p, got, want)
		}
	}
	// A /20 answers PTRs inside it and refuses the rest of the /16.
	recs := NewRecords()
	recs.Set("a", netip.MustParseAddr("10.1.15.7"))
	h := NewHandler(recs, netip.MustParsePrefix("10.1.0.0/20"))
	if m := ask(t, h, "7.15.1.10.in-addr.arpa.", mdns.TypePTR); m.Rcode != mdns.RcodeSuccess || len(m.Answer) != 1 {
		t.Errorf("PTR inside /20: %v", m)
	}
	if m := ask(t, h, "7.16.1.10.in-addr.arpa.", mdns.TypePTR); m.Rcode != mdns.RcodeRefused {
		t.Errorf("PTR outside /20: rcode %s", mdns.RcodeToString[m.Rcode])
	}
}

func TestParseReverse(t *testing.T) {
	good := map[string]string{"4.3.2.1.in-addr.arpa.": "1.2.3.4", "0.0.0.0.in-addr.arpa.": "0.0.0.0", "255.255.255.255.in-addr.arpa.": "255.255.255.255"}
	for n, want := range good {
		if ip, ok := parseReverse(n); !ok || ip.String() != want {
			t.Errorf("parseReverse(%s) = %v %v", n, ip, ok)
		}
	}
	for _, n := range []string{"3.2.1.in-addr.arpa.", "5.4.3.2.1.in-addr.arpa.", "256.3.2.1.in-addr.arpa.", "-1.3.2.1.in-addr.arpa.", "..2.1.in-addr.arpa.", "1.2.3.4.", "+1.2.3.4.in-addr.arpa."} {
		if ip, ok := parseReverse(n); ok {
			t.Errorf("parseReverse(%s) = %v; want failure", n, ip)
		}
	}
}

func FuzzHandler(f *testing.F) {
	h, _ := testHandler()
	for _, name := range []string{"dev.vm.", "nope.vm.", "2.0.16.172.in-addr.arpa.", "example.com.", "vm."} {
		q := new(mdns.Msg)
		q.SetQuestion(name, mdns.TypeA)
		q.SetEdns0(1232, false)
		b, _ := q.Pack()
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{0, 1, 2})
	f.Add(wire(mdns.Fqdn("DeV.vM"), mdns.TypeA, true))
	f.Fuzz(func(t *testing.T, data []byte) {
		if fast, ok := h.AnswerWire(data, nil); ok {
			if err := sameAsSlowPath(h, data, fast); err != "" {
				t.Fatal(err)
			}
		}
		q := new(mdns.Msg)
		// A message that does not unpack fully is still handed over in part:
		// the handler must cope with whatever the unpacker produced.
		_ = q.Unpack(data)
		rec := &recorder{}
		h.ServeDNS(rec, q)
		if rec.msg == nil {
			t.Fatal("no reply written")
		}
		if rec.msg.Id != q.Id || !rec.msg.Response {
			t.Fatalf("reply id %d response %v for query id %d", rec.msg.Id, rec.msg.Response, q.Id)
		}
	})
}

func wire(name string, qtype uint16, edns bool) []byte {
	q := new(mdns.Msg)
	q.SetQuestion(name, qtype)
	if edns {
		q.SetEdns0(4096, false)
	}
	b, err := q.Pack()
	if err != nil {
		panic(err)
	}
	return b
}

// sameAsSlowPath checks a fast-path reply against ServeDNS's for the same
// query; it returns a description of the difference, or "".
func sameAsSlowPath(h *Handler, query, fast []byte) string {
	q := new(mdns.Msg)
	if err := q.Unpack(query); err != nil {
		return "fast path answered a query that does not unpack: " + err.Error()
	}
	rec := &recorder{}
	h.ServeDNS(rec, q)
	slow := new(mdns.Msg)
	if err := slow.Unpack(rec.buf); err != nil {
		return "slow reply does not unpack: " + err.Error()
	}
	got := new(mdns.Msg)
	if err := got.Unpack(fast); err != nil {
		return "fast reply does not unpack: " + err.Error()
	}
	if got.String() != slow.String() {
		return "fast reply\n" + got.String() + "\ndiffers from slow reply\n" + slow.String()
	}
	return ""
}

func TestAnswerWireMatchesServeDNS(t *testing.T) {
	h, _ := testHandler()
	cd := new(mdns.Msg)
	cd.SetQuestion("dev.vm.", mdns.TypeA)
	cd.CheckingDisabled = true
	cd.RecursionDesired = false
	cdWire, _ := cd.Pack()
	tests := []struct {
		name  string
		query []byte
		fast  bool
	}{
		{"A", wire("dev.vm.", mdns.TypeA, false), true},
		{"A mixed case", wire("DEV.Vm.", mdns.TypeA, false), true},
		{"A with EDNS", wire("build-box.vm.", mdns.TypeA, true), true},
		{"CD and no RD", cdWire, true},
		{"unknown name", wire("nope.vm.", mdns.TypeA, false), false},
		{"AAAA", wire("dev.vm.", mdns.TypeAAAA, false), false},
		{"apex", wire("vm.", mdns.TypeA, false), false},
		{"outside", wire("dev.example.", mdns.TypeA, false), false},
		{"special char", wire("d\\@v.vm.", mdns.TypeA, false), false},
		{"PTR", wire("2.0.16.172.in-addr.arpa.", mdns.TypePTR, false), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, ok := h.AnswerWire(tt.query, make([]byte, 0, 512))
			if ok != tt.fast {
				t.Fatalf("fast path taken = %v; want %v", ok, tt.fast)
			}
			if !ok {
				return
			}
			if err := sameAsSlowPath(h, tt.query, out); err != "" {
				t.Fatal(err)
			}
		})
	}
}

func BenchmarkHandlerAWire(b *testing.B) {
	recs := NewRecords()
	for i := range 10 {
		recs.Set("vm"+string(rune('a'+i)), netip.AddrFrom4([4]byte{172, 16, 0, byte(2 + i)}))
	}
	h := NewHandler(recs, netip.MustParsePrefix("172.16.0.0/24"))
	q := wire("vmc.vm.", mdns.TypeA, false)
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		out, ok := h.AnswerWire(q, buf)
		if !ok || len(out) == 0 {
			b.Fatal("fast path not taken")
		}
	}
}

func BenchmarkHandlerA(b *testing.B) {
	recs := NewRecords()
	for i := range 10 {
		recs.Set("vm"+string(rune('a'+i)), netip.AddrFrom4([4]byte{172, 16, 0, byte(2 + i)}))
	}
	h := NewHandler(recs, netip.MustParsePrefix("172.16.0.0/24"))
	q := new(mdns.Msg)
	q.SetQuestion("vmc.vm.", mdns.TypeA)
	wire, _ := q.Pack()
	rec := &recorder{buf: make([]byte, 0, 512)}
	b.ReportAllocs()
	for b.Loop() {
		m := new(mdns.Msg)
		if err := m.Unpack(wire); err != nil {
			b.Fatal(err)
		}
		h.ServeDNS(rec, m)
		if rec.err != nil || len(rec.msg.Answer) != 1 {
			b.Fatalf("bad reply: %v %v", rec.err, rec.msg)
		}
	}
}

// TestRecordsCompact: rebuilding the tables keeps every name, address and
// suspended mark.
func TestRecordsCompact(t *testing.T) {
	r := NewRecords()
	for i := 0; i < 500; i++ {
		r.Set(fmt.Sprintf("vm%d", i), netip.AddrFrom4([4]byte{172, 16, byte(i >> 8), byte(i)}))
	}
	for i := 2; i < 500; i++ {
		r.Remove(fmt.Sprintf("vm%d", i))
	}
	r.SetAsleep("vm1", netip.MustParseAddr("172.16.0.1"))
	r.Compact()
	if r.Len() != 2 {
		t.Fatalf("%d names after Compact, want 2", r.Len())
	}
	if ip, ok := r.LookupName("vm0"); !ok || ip != netip.MustParseAddr("172.16.0.0") {
		t.Errorf("vm0: %v %v", ip, ok)
	}
	if n, ok := r.LookupAddr(netip.MustParseAddr("172.16.0.1")); !ok || n != "vm1" {
		t.Errorf("172.16.0.1: %q %v", n, ok)
	}
	if !r.Asleep("vm1") || r.Asleep("vm0") {
		t.Errorf("asleep after Compact: vm1 %v, vm0 %v", r.Asleep("vm1"), r.Asleep("vm0"))
	}
	if _, ok := r.LookupName("vm7"); ok {
		t.Error("a removed name came back")
	}
}
