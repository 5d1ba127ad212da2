// Package dns is banger's authoritative DNS server for the zone `vm.`:
// NAME.vm answers the address of a running VM, and PTR queries for guest
// addresses answer NAME.vm. Handler is pure (it reads a Lookup and never
// binds anything); Server runs it on UDP and TCP listeners.
package dns

import (
	"maps"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	mdns "github.com/miekg/dns"
)

// Zone is the forward zone banger is authoritative for.
const Zone = "vm."

// TTL is the lifetime of answers and of negative answers: VMs come and go.
const TTL = 5

// ednsSize is the UDP payload size banger advertises (the DNS flag day value).
const ednsSize = 1232

// Lookup answers names in the zone (without the zone suffix, lowercase) and
// reverse lookups.
type Lookup interface {
	LookupName(name string) (netip.Addr, bool)
	LookupAddr(ip netip.Addr) (string, bool)
}

// Records is a concurrency-safe Lookup the daemon fills: Set when a VM
// reaches running, SetAsleep when it is suspended (its name keeps
// answering, and a WakingHandler wakes it on a query), Remove on
// stop/kill/delete, Replace on rebuild.
type Records struct {
	mu      sync.RWMutex
	byName  map[string]netip.Addr
	byAddr  map[netip.Addr]string
	asleep  map[string]bool
	nAsleep atomic.Int32 // len(asleep), read without the lock
}

// NewRecords returns an empty record set.
func NewRecords() *Records {
	return &Records{byName: map[string]netip.Addr{}, byAddr: map[netip.Addr]string{}, asleep: map[string]bool{}}
}

func normName(name string) string { return strings.ToLower(strings.TrimSuffix(name, ".")) }

// Set publishes name (case-insensitive, without ".vm") at ip, replacing any
// earlier address of name and any earlier name of ip. The name is awake.
func (r *Records) Set(name string, ip netip.Addr) { r.set(name, ip, false) }

// SetAsleep publishes name at ip like Set, marked as a suspended VM's.
func (r *Records) SetAsleep(name string, ip netip.Addr) { r.set(name, ip, true) }

func (r *Records) set(name string, ip netip.Addr, asleep bool) {
	name = normName(name)
	ip = ip.Unmap()
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.byName[name]; ok {
		delete(r.byAddr, old)
	}
	if oldName, ok := r.byAddr[ip]; ok {
		delete(r.byName, oldName)
		delete(r.asleep, oldName)
	}
	r.byName[name] = ip
	r.byAddr[ip] = name
	if asleep {
		r.asleep[name] = true
	} else {
		delete(r.asleep, name)
	}
	r.nAsleep.Store(int32(len(r.asleep)))
}

// Compact rebuilds the tables at their present size (a Go map keeps the
// room it grew to, so tables that held 500 VMs' names hold it after they
// have gone).
func (r *Records) Compact() {
	r.mu.Lock()
	defer r.mu.Unlock()
	byName := make(map[string]netip.Addr, len(r.byName))
	maps.Copy(byName, r.byName)
	byAddr := make(map[netip.Addr]string, len(r.byAddr))
	maps.Copy(byAddr, r.byAddr)
	asleep := make(map[string]bool, len(r.asleep))
	maps.Copy(asleep, r.asleep)
	r.byName, r.byAddr, r.asleep = byName, byAddr, asleep
}

// Remove unpublishes name; an unknown name is fine.
func (r *Records) Remove(name string) {
	name = normName(name)
	r.mu.Lock()
	defer r.mu.Unlock()
	if ip, ok := r.byName[name]; ok {
		delete(r.byName, name)
		if r.byAddr[ip] == name {
			delete(r.byAddr, ip)
		}
	}
	delete(r.asleep, name)
	r.nAsleep.Store(int32(len(r.asleep)))
}

// Replace swaps in a whole new set of records (after a daemon restart or a
// reconcile), all awake.
func (r *Records) Replace(m map[string]netip.Addr) { r.ReplaceAll(m, nil) }

// ReplaceAll swaps in a whole new set of records; the names in asleep (a
// subset of m) are marked as suspended VMs'.
func (r *Records) ReplaceAll(m map[string]netip.Addr, asleep map[string]bool) {
	byName := make(map[string]netip.Addr, len(m))
	byAddr := make(map[netip.Addr]string, len(m))
	sleeping := make(map[string]bool, len(asleep))
	for n, ip := range m {
		key := normName(n)
		ip = ip.Unmap()
		byName[key] = ip
		byAddr[ip] = key
		if asleep[n] {
			sleeping[key] = true
		}
	}
	r.mu.Lock()
	r.byName, r.byAddr, r.asleep = byName, byAddr, sleeping
	r.nAsleep.Store(int32(len(sleeping)))
	r.mu.Unlock()
}

// Asleep reports whether name (lowercase, without the zone) is published
// as a suspended VM's.
func (r *Records) Asleep(name string) bool {
	if r.nAsleep.Load() == 0 {
		return false
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.asleep[name]
}

// AnyAsleep reports whether any published name is a suspended VM's; it
// takes no lock, so the fast path can ask it on every query.
func (r *Records) AnyAsleep() bool { return r.nAsleep.Load() > 0 }

// Len is the number of published names.
func (r *Records) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.byName)
}

// LookupName implements Lookup.
func (r *Records) LookupName(name string) (netip.Addr, bool) {
	r.mu.RLock()
	ip, ok := r.byName[name]
	r.mu.RUnlock()
	return ip, ok
}

// LookupAddr implements Lookup.
func (r *Records) LookupAddr(ip netip.Addr) (string, bool) {
	r.mu.RLock()
	n, ok := r.byAddr[ip]
	r.mu.RUnlock()
	return n, ok
}

// Handler answers for `vm.` and for the reverse zone of the VM subnet. It is
// authoritative (AA), never recursive, and refuses everything else.
type Handler struct {
	lookup  Lookup
	reverse netip.Prefix
	revZone string
	soaVM   *mdns.SOA
	soaRev  *mdns.SOA
}

// NewHandler returns a Handler reading lookup, with PTR answers for guest
// addresses inside reverse (the VM cidr).
func NewHandler(lookup Lookup, reverse netip.Prefix) *Handler {
	reverse = reverse.Masked()
	h := &Handler{lookup: lookup, reverse: reverse, revZone: ReverseZone(reverse)}
	h.soaVM = soa(Zone)
	h.soaRev = soa(h.revZone)
	return h
}

// ReverseZone is the in-addr.arpa zone covering prefix, at an octet
// boundary (a /20 is answered from its /16 zone, PTRs only inside the /20).
func ReverseZone(prefix netip.Prefix) string {
	if !prefix.IsValid() || !prefix.Addr().Is4() {
		return ""
	}
	b := prefix.Masked().Addr().As4()
	var sb strings.Builder
	for i := prefix.Bits()/8 - 1; i >= 0; i-- {
		sb.WriteString(strconv.Itoa(int(b[i])))
		sb.WriteByte('.')
	}
	sb.WriteString("in-addr.arpa.")
	return sb.String()
}

func soa(zone string) *mdns.SOA {
	return &mdns.SOA{
		Hdr:     mdns.RR_Header{Name: zone, Rrtype: mdns.TypeSOA, Class: mdns.ClassINET, Ttl: TTL},
		Ns:      "ns." + Zone,
		Mbox:    "hostmaster." + Zone,
		Serial:  1,
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  TTL,
	}
}

// ServeDNS implements dns.Handler.
func (h *Handler) ServeDNS(w mdns.ResponseWriter, r *mdns.Msg) {
	_ = w.WriteMsg(h.Answer(r))
}

// Answer builds the reply to r.
func (h *Handler) Answer(r *mdns.Msg) *mdns.Msg {
	m := new(mdns.Msg)
	m.Id = r.Id
	m.Response = true
	m.Opcode = r.Opcode
	m.RecursionDesired = r.RecursionDesired
	m.CheckingDisabled = r.CheckingDisabled
	if r.Response {
		m.Rcode = mdns.RcodeFormatError
		return m
	}
	if r.Opcode != mdns.OpcodeQuery {
		m.Rcode = mdns.RcodeNotImplemented
		return m
	}
	if len(r.Question) != 1 {
		m.Rcode = mdns.RcodeFormatError
		return m
	}
	m.Question = r.Question[:1:1]
	if opt := r.IsEdns0(); opt != nil {
		reply := &mdns.OPT{Hdr: mdns.RR_Header{Name: ".", Rrtype: mdns.TypeOPT}}
		reply.SetUDPSize(ednsSize)
		m.Extra = []mdns.RR{reply}
		if opt.Version() != 0 {
			m.Rcode = mdns.RcodeBadVers
			return m
		}
	}
	q := r.Question[0]
	if q.Qclass != mdns.ClassINET && q.Qclass != mdns.ClassANY {
		m.Rcode = mdns.RcodeRefused
		return m
	}
	name := strings.ToLower(q.Name)
	switch {
	case name == Zone:
		h.apex(m, q, h.soaVM)
	case strings.HasSuffix(name, "."+Zone):
		h.forward(m, q, name[:len(name)-len(Zone)-1])
	case h.revZone != "" && name == h.revZone:
		h.apex(m, q, h.soaRev)
	case h.revZone != "" && strings.HasSuffix(name, "."+h.revZone):
		h.ptr(m, q, name)
	default:
		m.Rcode = mdns.RcodeRefused
	}
	return m
}

func (h *Handler) apex(m *mdns.Msg, q mdns.Question, s *mdns.SOA) {
	m.Authoritative = true
	if q.Qtype == mdns.TypeSOA || q.Qtype == mdns.TypeANY {
		m.Answer = []mdns.RR{s}
		return
	}
	m.Ns = []mdns.RR{s}
}

func (h *Handler) forward(m *mdns.Msg, q mdns.Question, label string) {
	m.Authoritative = true
	ip, ok := h.lookup.LookupName(label)
	if !ok {
		m.Rcode = mdns.RcodeNameError
		m.Ns = []mdns.RR{h.soaVM}
		return
	}
	if q.Qtype != mdns.TypeA && q.Qtype != mdns.TypeANY {
		m.Ns = []mdns.RR{h.soaVM}
		return
	}
	b := ip.As4()
	m.Answer = []mdns.RR{&mdns.A{
		Hdr: mdns.RR_Header{Name: q.Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: TTL},
		A:   net.IPv4(b[0], b[1], b[2], b[3]).To4(),
	}}
}

func (h *Handler) ptr(m *mdns.Msg, q mdns.Question, name string) {
	ip, ok := parseReverse(name)
	if ok && !h.reverse.Contains(ip) {
		// In the octet-aligned zone but outside the VM subnet: not ours.
		m.Rcode = mdns.RcodeRefused
		return
	}
	m.Authoritative = true
	var host string
	if ok {
		host, ok = h.lookup.LookupAddr(ip)
	}
	if !ok {
		m.Rcode = mdns.RcodeNameError
		m.Ns = []mdns.RR{h.soaRev}
		return
	}
	if q.Qtype != mdns.TypePTR && q.Qtype != mdns.TypeANY {
		m.Ns = []mdns.RR{h.soaRev}
		return
	}
	m.Answer = []mdns.RR{&mdns.PTR{
		Hdr: mdns.RR_Header{Name: q.Name, Rrtype: mdns.TypePTR, Class: mdns.ClassINET, Ttl: TTL},
		Ptr: host + "." + Zone,
	}}
}

// parseReverse reads "d.c.b.a.in-addr.arpa." (lowercase) as a.b.c.d.
func parseReverse(name string) (netip.Addr, bool) {
	rest, ok := strings.CutSuffix(name, ".in-addr.arpa.")
	if !ok {
		return netip.Addr{}, false
	}
	var b [4]byte
	for i := 3; i >= 0; i-- {
		var part string
		if i == 0 {
			part = rest
		} else {
			var found bool
			part, rest, found = strings.Cut(rest, ".")
			if !found {
				return netip.Addr{}, false
			}
		}
		if part == "" || len(part) > 3 || (len(part) > 1 && part[0] == '0') {
			return netip.Addr{}, false
		}
		v := 0
		for j := 0; j < len(part); j++ {
			if part[j] < '0' || part[j] > '9' {
				return netip.Addr{}, false
			}
			v = v*10 + int(part[j]-'0')
		}
		if v > 255 {
			return netip.Addr{}, false
		}
		b[i] = byte(v)
	}
	return netip.AddrFrom4(b), true
}

// AnswerWire is the fast path for the common query, "A of a running
// NAME.vm": it reads the question straight from the wire and writes the
// reply into buf without unpacking or packing a Msg. It returns false for
// anything else (including NXDOMAIN and every unusual header), and the
// caller then goes through ServeDNS; both paths give the same answer, which
// TestAnswerWireMatchesServeDNS and FuzzHandler check.
func (h *Handler) AnswerWire(q, buf []byte) ([]byte, bool) {
	const hdr = 12
	if len(q) < hdr+5 {
		return nil, false
	}
	// QR=0, opcode QUERY, no TC; RA/Z/AD/rcode must be zero so that an odd
	// header takes the slow path. QDCOUNT=1, ANCOUNT=0, NSCOUNT=0, ARCOUNT<=1.
	if q[2]&0xFA != 0 || q[3]&0x60 != 0 || q[3]&0x0F != 0 ||
		q[4] != 0 || q[5] != 1 || q[6]|q[7]|q[8]|q[9]|q[10] != 0 || q[11] > 1 {
		return nil, false
	}
	// Walk the question name: labels only (no compression), lowercasing
	// into key everything before the final "vm" label.
	var key [255]byte
	n, off, labels := 0, hdr, 0
	lastStart, lastLen := 0, 0
	for {
		if off >= len(q) {
			return nil, false
		}
		l := int(q[off])
		if l == 0 {
			off++
			break
		}
		if l > 63 || off+1+l > len(q) || n+l+1 > len(key) {
			return nil, false
		}
		if labels > 0 {
			key[n] = '.'
			n++
		}
		lastStart, lastLen = n, l
		for _, c := range q[off+1 : off+1+l] {
			switch {
			case c >= 'A' && c <= 'Z':
				c += 'a' - 'A'
			case c <= ' ' || c >= 0x7f || strings.IndexByte(".\\'@;()\"", c) >= 0:
				// escaped in presentation form: slow path
				return nil, false
			}
			key[n] = c
			n++
		}
		labels++
		off += 1 + l
	}
	if labels < 2 || lastLen != 2 || key[lastStart] != 'v' || key[lastStart+1] != 'm' {
		return nil, false
	}
	qend := off + 4
	if qend > len(q) {
		return nil, false
	}
	qtype := uint16(q[off])<<8 | uint16(q[off+1])
	qclass := uint16(q[off+2])<<8 | uint16(q[off+3])
	if qtype != mdns.TypeA || qclass != mdns.ClassINET {
		return nil, false
	}
	edns := q[11] == 1
	if edns {
		// Only a bare OPT: root owner, type OPT, version 0, no options.
		o := q[qend:]
		if len(o) != 11 || o[0] != 0 || o[1] != 0 || o[2] != byte(mdns.TypeOPT) || o[6] != 0 || o[9] != 0 || o[10] != 0 {
			return nil, false
		}
	} else if qend != len(q) {
		return nil, false
	}
	ip, ok := h.lookup.LookupName(string(key[:lastStart-1]))
	if !ok || !ip.Is4() {
		return nil, false
	}
	out := append(buf[:0], q[:qend]...)
	out[2] = 0x80 | 0x04 | q[2]&0x01 // QR, AA, RD copied
	out[3] = q[3] & 0x10             // CD copied
	out[7] = 1                       // ANCOUNT
	a := ip.As4()
	out = append(out, 0xC0, hdr, // pointer to the question name
		0, byte(mdns.TypeA), 0, byte(mdns.ClassINET),
		0, 0, 0, TTL, 0, 4, a[0], a[1], a[2], a[3])
	if edns {
		out = append(out, 0, 0, byte(mdns.TypeOPT), ednsSize>>8, ednsSize&0xFF, 0, 0, 0, 0, 0, 0)
	}
	return out, true
}
