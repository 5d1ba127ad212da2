//go:build linux && (amd64 || arm64)

package dns

import (
	"encoding/binary"
	"errors"
	"net"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	mdns "github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// The Linux UDP path. Each listener is a blocking socket made here (not by
// net.ListenUDP, whose socket is non-blocking and registered with Go's
// netpoller) read by udpReaders goroutines, each on its own locked thread
// and blocked in recvmmsg(2) inside the kernel. The kernel wakes one
// exclusive waiter per arriving datagram, so a query costs one thread
// wake-up; the reader answers the whole batch it got with the pure
// handler and replies with one sendmmsg(2), straight to the sockaddr the
// kernel filled in. Through the netpoller the same query also cost an
// epoll wake, a goroutine hand-off and often a spinning M's futex wake.
//
// The syscalls go through syscall.Syscall6 (never RawSyscall): a reader
// blocked in the kernel has left its P, so the scheduler and the GC go on.
// close shuts the socket down, which wakes every blocked reader (recvmmsg
// then returns an empty datagram), waits for them and only then closes the
// descriptor, so no reader can touch a reused fd.

// mmsghdr is struct mmsghdr of <sys/socket.h>: a msghdr and the byte count
// the kernel fills in, padded to 64 bytes on 64-bit Linux.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
	_   [4]byte
}

// Both ways: a compile error unless mmsghdr is exactly 64 bytes.
var (
	_ [64 - unsafe.Sizeof(mmsghdr{})]byte
	_ [unsafe.Sizeof(mmsghdr{}) - 64]byte
)

// yieldEvery is how often a busy reader lets itself be scheduled anew
// (read); sysmon's limit is 10 ms.
const yieldEvery = 5 * time.Millisecond

// saLen is room for the largest peer address (sockaddr_in6).
const saLen = unix.SizeofSockaddrInet6

func mmsg(trap uintptr, fd int, msgs []mmsghdr, flags int) (int, error) {
	n, _, e := syscall.Syscall6(trap, uintptr(fd), uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)), uintptr(flags), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func sendto(fd int, b, sa []byte) error {
	_, _, e := syscall.Syscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), 0, uintptr(unsafe.Pointer(&sa[0])), uintptr(len(sa)))
	if e != 0 {
		return e
	}
	return nil
}

// mmsgUDP is one blocking UDP socket and its readers.
type mmsgUDP struct {
	fd      int
	local   *net.UDPAddr
	h       mdns.Handler
	closed  atomic.Bool
	readers sync.WaitGroup
	alone   sync.WaitGroup
	once    sync.Once
	err     error
}

// openUDP binds a blocking UDP socket on ip:port (0 picks a port).
func openUDP(ip net.IP, port int) (udpListener, error) {
	laddr := &net.UDPAddr{IP: ip, Port: port}
	fail := func(op string, err error) (udpListener, error) {
		return nil, &net.OpError{Op: "listen", Net: "udp", Addr: laddr, Err: os.NewSyscallError(op, err)}
	}
	family := unix.AF_INET6
	var sa unix.Sockaddr
	if ip4 := ip.To4(); ip4 != nil {
		family = unix.AF_INET
		sa4 := &unix.SockaddrInet4{Port: port}
		copy(sa4.Addr[:], ip4)
		sa = sa4
	} else if ip16 := ip.To16(); ip16 != nil {
		sa6 := &unix.SockaddrInet6{Port: port}
		copy(sa6.Addr[:], ip16)
		sa = sa6
	} else {
		return nil, &net.OpError{Op: "listen", Net: "udp", Addr: laddr, Err: errors.New("not an IP address")}
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return fail("socket", err)
	}
	if family == unix.AF_INET6 {
		// Like net.ListenUDP: "::" takes IPv4 too, a specific address not.
		v6only := 1
		if ip.IsUnspecified() {
			v6only = 0
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, v6only); err != nil {
			unix.Close(fd)
			return fail("setsockopt", err)
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return fail("bind", err)
	}
	got, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return fail("getsockname", err)
	}
	local := &net.UDPAddr{}
	switch a := got.(type) {
	case *unix.SockaddrInet4:
		local.IP, local.Port = net.IP(append([]byte(nil), a.Addr[:]...)), a.Port
	case *unix.SockaddrInet6:
		local.IP, local.Port = net.IP(append([]byte(nil), a.Addr[:]...)), a.Port
	}
	return &mmsgUDP{fd: fd, local: local}, nil
}

func (l *mmsgUDP) localAddr() *net.UDPAddr { return l.local }

func (l *mmsgUDP) serve(h mdns.Handler) {
	l.h = h
	for range udpReaders {
		l.readers.Add(1)
		go l.read()
	}
}

func (l *mmsgUDP) close() error {
	l.once.Do(func() {
		l.closed.Store(true)
		// On an unconnected UDP socket shutdown fails with ENOTCONN but
		// still marks it shut and wakes every sleeper; that is all it is
		// for here.
		_ = unix.Shutdown(l.fd, unix.SHUT_RDWR)
		l.readers.Wait()
		l.alone.Wait()
		if err := unix.Close(l.fd); err != nil {
			l.err = os.NewSyscallError("close", err)
		}
	})
	return l.err
}

// batch is one reader's buffers: receive slots (header, iovec, payload,
// peer address) and the replies going out.
type batch struct {
	in    []mmsghdr
	inIov []unix.Iovec
	rbuf  [][]byte
	names [][saLen]byte
	wbuf  [][]byte
	out   []mmsghdr
	oIov  []unix.Iovec
}

func newBatch(n int) *batch {
	b := &batch{
		in: make([]mmsghdr, n), inIov: make([]unix.Iovec, n), rbuf: make([][]byte, n),
		names: make([][saLen]byte, n), wbuf: make([][]byte, n),
		out: make([]mmsghdr, n), oIov: make([]unix.Iovec, n),
	}
	for i := range n {
		b.rbuf[i] = make([]byte, udpMax)
		b.wbuf[i] = make([]byte, 0, 512)
		b.inIov[i].Base = &b.rbuf[i][0]
		b.inIov[i].SetLen(udpMax)
		b.in[i].hdr.Iov = &b.inIov[i]
		b.in[i].hdr.SetIovlen(1)
		b.in[i].hdr.Name = &b.names[i][0]
		b.in[i].hdr.Namelen = saLen
		b.out[i].hdr.SetIovlen(1)
		b.out[i].hdr.Iov = &b.oIov[i]
	}
	return b
}

func (l *mmsgUDP) read() {
	defer l.readers.Done()
	// Never unlocked: when the reader ends, its thread ends with it, so
	// closed listeners leave no threads behind.
	runtime.LockOSThread()
	b := newBatch(udpBatch)
	w := &udpWriter{local: l.local}
	yielded := time.Now()
	for {
		// A goroutine that keeps its P for 10 ms without being scheduled
		// anew looks stuck to the runtime's sysmon, even though it only
		// sits in syscalls: sysmon takes the P away, then sleeps deeply,
		// and every later wake-up of the reader must wake sysmon too,
		// which then polls every 20 µs for a millisecond (at 10k q/s that
		// cost more than the queries). Yielding every yieldEvery counts as
		// being scheduled; idle readers still let go of their P.
		if t := time.Now(); t.Sub(yielded) > yieldEvery {
			runtime.Gosched()
			yielded = t
		}
		// MSG_WAITFORONE: sleep until one datagram is there, then take
		// whatever else is queued without waiting.
		n, err := mmsg(unix.SYS_RECVMMSG, l.fd, b.in, unix.MSG_WAITFORONE)
		if l.closed.Load() {
			return
		}
		if err != nil {
			if err == unix.EBADF || err == unix.ENOTSOCK || err == unix.EINVAL {
				return // not a socket any more: nothing to read
			}
			continue // EINTR, ENOMEM, an ICMP error queued on the socket
		}
		out := 0
		for i := range n {
			m := &b.in[i]
			raw := b.rbuf[i][:min(int(m.n), udpMax)]
			sa := b.names[i][:min(int(m.hdr.Namelen), saLen)]
			m.hdr.Namelen = saLen // the kernel overwrote it; reset for the next read
			if len(raw) < 12 || len(sa) == 0 {
				continue // not a query (an empty datagram after shutdown, too)
			}
			if mustWait(l.h, raw) {
				l.answerAlone(append([]byte(nil), sa...), append([]byte(nil), raw...))
				continue
			}
			w.reset(nil, sa, b.wbuf[i][:0])
			answer(l.h, w, raw)
			if len(w.buf) == 0 {
				continue
			}
			b.wbuf[i] = w.buf
			b.oIov[out].Base = &w.buf[0]
			b.oIov[out].SetLen(len(w.buf))
			b.out[out].hdr.Name = &b.names[i][0]
			b.out[out].hdr.Namelen = uint32(len(sa))
			out++
		}
		for sent := 0; sent < out; {
			k, err := mmsg(unix.SYS_SENDMMSG, l.fd, b.out[sent:out], 0)
			if err != nil {
				if l.closed.Load() {
					return
				}
				// Drop the datagram the kernel refused and go on.
				k = 1
			}
			sent += max(k, 1)
		}
	}
}

// answerAlone answers one query on its own goroutine, so that the reader
// goes on answering the rest meanwhile; close waits for it.
func (l *mmsgUDP) answerAlone(sa, raw []byte) {
	l.alone.Add(1)
	go func() {
		defer l.alone.Done()
		w := &udpWriter{local: l.local}
		w.reset(nil, sa, make([]byte, 0, 512))
		answer(l.h, w, raw)
		if len(w.buf) > 0 {
			_ = sendto(l.fd, w.buf, sa)
		}
	}()
}

// sockaddrUDP reads a raw sockaddr_in or sockaddr_in6 as the kernel wrote
// it (family in host order, port and address in network order).
func sockaddrUDP(sa []byte) *net.UDPAddr {
	if len(sa) < 2 {
		return nil
	}
	switch binary.NativeEndian.Uint16(sa) {
	case unix.AF_INET:
		if len(sa) < unix.SizeofSockaddrInet4 {
			return nil
		}
		return &net.UDPAddr{IP: net.IPv4(sa[4], sa[5], sa[6], sa[7]), Port: int(binary.BigEndian.Uint16(sa[2:]))}
	case unix.AF_INET6:
		if len(sa) < unix.SizeofSockaddrInet6 {
			return nil
		}
		a := &net.UDPAddr{IP: append(net.IP(nil), sa[8:24]...), Port: int(binary.BigEndian.Uint16(sa[2:]))}
		if id := binary.NativeEndian.Uint32(sa[24:]); id != 0 {
			a.Zone = strconv.FormatUint(uint64(id), 10)
			if ifi, err := net.InterfaceByIndex(int(id)); err == nil {
				a.Zone = ifi.Name
			}
		}
		return a
	}
	return nil
}
