package dns

import (
	"errors"
	"net"
	"sync"

	mdns "github.com/miekg/dns"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// batchConn is what ipv4.PacketConn and ipv6.PacketConn share.
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// pollUDP is the portable listener: one goroutine doing batched reads and
// writes through Go's netpoller (recvmmsg/sendmmsg where the platform has
// them). Linux on amd64 and arm64 uses udp_linux.go instead, whose readers
// block in the kernel and cost fewer wake-ups per query.
type pollUDP struct {
	conn *net.UDPConn
	h    mdns.Handler
	done sync.WaitGroup
}

func openPollUDP(ip net.IP, port int) (udpListener, error) {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip, Port: port})
	if err != nil {
		return nil, err
	}
	return &pollUDP{conn: conn}, nil
}

func (s *pollUDP) localAddr() *net.UDPAddr { return s.conn.LocalAddr().(*net.UDPAddr) }

func (s *pollUDP) serve(h mdns.Handler) {
	s.h = h
	s.done.Add(1)
	go s.loop()
}

func (s *pollUDP) close() error {
	err := s.conn.Close()
	s.done.Wait()
	return err
}

func (s *pollUDP) loop() {
	defer s.done.Done()
	var pc batchConn = ipv4.NewPacketConn(s.conn)
	if s.localAddr().IP.To4() == nil {
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
			raw := rbufs[i][:in[i].N]
			if mustWait(s.h, raw) {
				s.answerAlone(in[i].Addr, append([]byte(nil), raw...))
				continue
			}
			w.reset(in[i].Addr, nil, wbufs[i][:0])
			answer(s.h, w, raw)
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

// answerAlone answers one query on its own goroutine, so that the
// listener goes on answering the rest meanwhile; close waits for it.
func (s *pollUDP) answerAlone(addr net.Addr, raw []byte) {
	s.done.Add(1)
	go func() {
		defer s.done.Done()
		w := &udpWriter{local: s.conn.LocalAddr()}
		w.reset(addr, nil, make([]byte, 0, 512))
		answer(s.h, w, raw)
		if len(w.buf) > 0 {
			_, _ = s.conn.WriteTo(w.buf, addr)
		}
	}()
}
