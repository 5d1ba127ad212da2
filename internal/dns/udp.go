package dns

import (
	"net"
	"runtime"

	mdns "github.com/miekg/dns"
)

// udpBatch is how many datagrams one recvmmsg/sendmmsg moves: under load
// a reader answers a whole batch per wake and per pair of syscalls.
const udpBatch = 32

// udpMax is the largest query read; anything longer is truncated by the
// kernel and then fails to unpack.
const udpMax = 4096

// udpReaders is how many reader threads each UDP listener runs on Linux
// (udp_linux.go): one per core, at most 4, so that the daemon's two
// listeners add at most 8 threads (2 cores: 4).
var udpReaders = min(runtime.NumCPU(), 4)

// udpListener is one UDP socket answering DNS. openUDP (per platform)
// makes the fast one; openPollUDP is the portable one on Go's netpoller.
type udpListener interface {
	localAddr() *net.UDPAddr
	// serve starts answering with h; it returns at once.
	serve(h mdns.Handler)
	// close stops answering, waits for every reader and every query
	// answered alone, and releases the socket.
	close() error
}

// waiter is a handler that must sometimes wait before it answers
// (WakingHandler, for a suspended VM's name).
type waiter interface {
	MustWait(query []byte) bool
}

// mustWait reports whether h wants raw answered off the batch.
func mustWait(h mdns.Handler, raw []byte) bool {
	wt, ok := h.(waiter)
	return ok && wt.MustWait(raw)
}

// wireAnswerer is a handler with a fast path on raw messages
// (Handler.AnswerWire).
type wireAnswerer interface {
	AnswerWire(query, buf []byte) ([]byte, bool)
}

// answer runs one raw query through h. Datagrams that are not queries are
// dropped (never answer a response: that is how reflection loops start);
// queries that do not unpack get FORMERR.
func answer(h mdns.Handler, w *udpWriter, raw []byte) {
	if len(raw) < 12 || raw[2]&0x80 != 0 {
		return
	}
	if fast, ok := h.(wireAnswerer); ok {
		if b, ok := fast.AnswerWire(raw, w.buf); ok {
			w.buf = b
			return
		}
	}
	q := new(mdns.Msg)
	if err := q.Unpack(raw); err != nil {
		m := new(mdns.Msg)
		m.Id = uint16(raw[0])<<8 | uint16(raw[1])
		m.Response = true
		m.Opcode = int(raw[2]>>3) & 0xF
		m.Rcode = mdns.RcodeFormatError
		_ = w.WriteMsg(m)
		return
	}
	w.limit = mdns.MinMsgSize
	if opt := q.IsEdns0(); opt != nil && int(opt.UDPSize()) > w.limit {
		w.limit = min(int(opt.UDPSize()), ednsSize)
	}
	h.ServeDNS(w, q)
}

// udpWriter is the ResponseWriter for one datagram of a batch: it packs the
// reply into the slot's buffer (truncating to what the client accepts). The
// peer is either an address (netpoller path) or the raw sockaddr the kernel
// filled in (Linux path), turned into a net.Addr only if a handler asks.
type udpWriter struct {
	local, remote net.Addr
	sa            []byte
	buf           []byte
	limit         int
}

func (w *udpWriter) reset(remote net.Addr, sa, buf []byte) {
	w.remote, w.sa, w.buf, w.limit = remote, sa, buf, mdns.MinMsgSize
}

func (w *udpWriter) LocalAddr() net.Addr { return w.local }

func (w *udpWriter) RemoteAddr() net.Addr {
	if w.remote == nil && len(w.sa) > 0 {
		if a := sockaddrUDP(w.sa); a != nil {
			w.remote = a
		}
	}
	return w.remote
}

func (w *udpWriter) Close() error        { return nil }
func (w *udpWriter) TsigStatus() error   { return nil }
func (w *udpWriter) TsigTimersOnly(bool) {}
func (w *udpWriter) Hijack()             {}

func (w *udpWriter) WriteMsg(m *mdns.Msg) error {
	b, err := m.PackBuffer(w.buf[:cap(w.buf)])
	if err == nil && len(b) > w.limit {
		m.Truncate(w.limit)
		b, err = m.PackBuffer(b)
	}
	if err != nil {
		w.buf = w.buf[:0]
		return err
	}
	w.buf = b
	return nil
}

func (w *udpWriter) Write(b []byte) (int, error) {
	w.buf = append(w.buf[:0], b...)
	return len(b), nil
}
