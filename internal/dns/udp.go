package dns

import (
	"errors"
	"net"
	"sync"

	mdns "github.com/miekg/dns"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// udpBatch is how many datagrams one recvmmsg/sendmmsg moves. Reading and
// answering queries in batches, on one goroutine per listener, is what lets
// the server outrun dnsmasq: the per-packet cost is dominated by syscalls.
const udpBatch = 64

// udpMax is the largest query read; anything longer is truncated by the
// kernel and then fails to unpack.
const udpMax = 4096

// batchConn is what ipv4.PacketConn and ipv6.PacketConn share.
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// udpServer answers DNS over one UDP socket with batched reads and writes.
// TCP stays with miekg's server, which handles framing and idle timeouts.
type udpServer struct {
	conn *net.UDPConn
	h    mdns.Handler
	done sync.WaitGroup
}

func newUDPServer(conn *net.UDPConn, h mdns.Handler) *udpServer {
	s := &udpServer{conn: conn, h: h}
	s.done.Add(1)
	go s.serve()
	return s
}

// close stops the loop and waits for it.
func (s *udpServer) close() error {
	err := s.conn.Close()
	s.done.Wait()
	return err
}

func (s *udpServer) serve() {
	defer s.done.Done()
	var pc batchConn = ipv4.NewPacketConn(s.conn)
	if a, ok := s.conn.LocalAddr().(*net.UDPAddr); ok && a.IP.To4() == nil {
		pc = ipv6.NewPacketConn(s.conn)
	}
	in := make([]ipv4.Message, udpBatch)
	out := make([]ipv4.Message, 0, udpBatch)
	rbufs := make([][]byte, udpBatch)
	wbufs := make([][]byte, udpBatch)
	for i := range in {
		rbufs[i] = make([]byte, udpMax)
		wbufs[i] = make([]byte, 0, 512)
		in[i].Buffers = [][]byte{rbufs[i]}
	}
	w := &udpWriter{local: s.conn.LocalAddr()}
	for {
		n, err := pc.ReadBatch(in, 0)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		out = out[:0]
		for i := range n {
			if wt, ok := s.h.(waiter); ok && wt.MustWait(rbufs[i][:in[i].N]) {
				s.answerAlone(in[i].Addr, append([]byte(nil), rbufs[i][:in[i].N]...))
				continue
			}
			w.reset(in[i].Addr, wbufs[i][:0])
			answer(s.h, w, rbufs[i][:in[i].N])
			if len(w.buf) == 0 {
				continue
			}
			wbufs[i] = w.buf
			out = append(out, ipv4.Message{Buffers: [][]byte{w.buf}, Addr: in[i].Addr})
		}
		for len(out) > 0 {
			sent, err := pc.WriteBatch(out, 0)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				// Drop the datagram the kernel refused and go on.
				sent = max(sent, 1)
			}
			out = out[sent:]
		}
	}
}

// waiter is a handler that must sometimes wait before it answers
// (WakingHandler, for a suspended VM's name).
type waiter interface {
	MustWait(query []byte) bool
}

// answerAlone answers one query on its own goroutine, so that the
// listener goes on answering the rest meanwhile; close waits for it.
func (s *udpServer) answerAlone(addr net.Addr, raw []byte) {
	s.done.Add(1)
	go func() {
		defer s.done.Done()
		w := &udpWriter{local: s.conn.LocalAddr()}
		w.reset(addr, make([]byte, 0, 512))
		answer(s.h, w, raw)
		if len(w.buf) > 0 {
			_, _ = s.conn.WriteTo(w.buf, addr)
		}
	}()
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
// reply into the slot's buffer (truncating to what the client accepts).
type udpWriter struct {
	local, remote net.Addr
	buf           []byte
	limit         int
}

func (w *udpWriter) reset(remote net.Addr, buf []byte) {
	w.remote, w.buf, w.limit = remote, buf, mdns.MinMsgSize
}

func (w *udpWriter) LocalAddr() net.Addr  { return w.local }
func (w *udpWriter) RemoteAddr() net.Addr { return w.remote }
func (w *udpWriter) Close() error         { return nil }
func (w *udpWriter) TsigStatus() error    { return nil }
func (w *udpWriter) TsigTimersOnly(bool)  {}
func (w *udpWriter) Hijack()              {}

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
