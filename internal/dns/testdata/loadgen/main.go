//go:build linux && (amd64 || arm64)

// Command loadgen is a DNS load generator light enough not to be the
// bottleneck on a small machine (dnsperf was: on 2 cores it used more CPU
// than the server it measured). It asks A of vm0.vm ... vmN-1.vm over
// several connected UDP sockets, each driven by its own thread blocked in
// the kernel: queries go out in bursts with sendmmsg(2), answers come back
// with recvmmsg(2).
//
//	loadgen -s 127.0.0.1:42169 -mode full -d 10s      # full load: q/s, lost
//	loadgen -s 127.0.0.1:42169 -mode rate -rate 10000 # paced: p50/p90/p99
//
// Full load keeps -window queries outstanding per socket and reports the
// answered queries per second and the queries lost (no answer within 1 s).
// Rate mode sends single queries at exactly -rate per second (absolute
// deadlines, nanosleep with 1 ns timer slack) round-robin over the sockets
// and reports the latency from just before sendto(2) to just after the
// answer's recvmmsg(2), so the generator's own wake-up is included, the same
// for every server. The last line is key=value pairs for scripts; the CPU
// the generator used is in it (cpu_us_per_query), so a script can show
// how the cores were split. It is under testdata so `go build ./...` skips
// it; bench-dnsperf.sh builds and runs it.
package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"net"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
	_   [4]byte
}

func mmsg(trap uintptr, fd int, msgs []mmsghdr, flags int) (int, error) {
	n, _, e := syscall.Syscall6(trap, uintptr(fd), uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)), uintptr(flags), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// lostAfter is how long an unanswered query counts as outstanding.
const lostAfter = time.Second

var (
	addr    = flag.String("s", "127.0.0.1:53", "server `host:port`")
	names   = flag.Int("names", 500, "ask vm0.vm ... vmN-1.vm")
	dur     = flag.Duration("d", 10*time.Second, "how long to send")
	mode    = flag.String("mode", "full", "full (as fast as answered) or rate (paced)")
	rate    = flag.Int("rate", 10000, "queries per second in rate mode")
	sockets = flag.Int("sockets", 2, "UDP sockets, one thread each")
	window  = flag.Int("window", 64, "outstanding queries per socket in full mode")
	batchN  = flag.Int("batch", 32, "queries per sendmmsg in full mode")
)

// client is one connected socket and its outstanding queries.
type client struct {
	fd     int
	sentAt [65536]atomic.Int64 // ns since start, 0 = not outstanding
	nextID uint16
	out    atomic.Int64 // queries outstanding

	sent, lost      atomic.Int64
	answered, stray int64 // by the receiving thread only
	lat             []int64
}

var (
	start   = time.Now()
	queries [][]byte
)

func now() int64 { return int64(time.Since(start)) + 1 }

// yielder lets a thread that lives in blocking syscalls be scheduled anew
// every few milliseconds: otherwise Go's sysmon takes it for a goroutine
// stuck on its P, takes the P, sleeps deeply, and every later wake-up
// wakes sysmon too (the server's readers do the same, udp_linux.go).
type yielder int64

func (y *yielder) maybe(t int64) {
	if t-int64(*y) > int64(5*time.Millisecond) {
		runtime.Gosched()
		*y = yielder(t)
	}
}

func query(i int) []byte {
	name := fmt.Sprintf("vm%d.vm", i)
	b := []byte{0, 0, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0}
	for _, l := range []string{name[:len(name)-3], "vm"} {
		b = append(b, byte(len(l)))
		b = append(b, l...)
	}
	return append(b, 0, 0, 1, 0, 1) // A, IN
}

func dial(ra *net.UDPAddr) (*client, error) {
	family := unix.AF_INET
	var sa unix.Sockaddr
	if ip4 := ra.IP.To4(); ip4 != nil {
		s := &unix.SockaddrInet4{Port: ra.Port}
		copy(s.Addr[:], ip4)
		sa = s
	} else {
		family = unix.AF_INET6
		s := &unix.SockaddrInet6{Port: ra.Port}
		copy(s.Addr[:], ra.IP.To16())
		sa = s
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4<<20)
	tv := unix.NsecToTimeval(int64(50 * time.Millisecond))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return nil, err
	}
	if err := unix.Connect(fd, sa); err != nil {
		return nil, err
	}
	return &client{fd: fd}, nil
}

// take claims a free query ID, stamped with the send time t.
func (c *client) take(t int64) uint16 {
	for c.sentAt[c.nextID].Load() != 0 {
		c.nextID++
	}
	id := c.nextID
	c.nextID++
	c.sentAt[id].Store(t)
	return id
}

// sweep counts the queries unanswered for lostAfter as lost.
func (c *client) sweep(t int64) {
	for i := range c.sentAt {
		if s := c.sentAt[i].Load(); s != 0 && t-s > int64(lostAfter) {
			if c.sentAt[i].CompareAndSwap(s, 0) {
				c.lost.Add(1)
				c.out.Add(-1)
			}
		}
	}
}

type bufs struct {
	in, out     []mmsghdr
	inIov, oIov []unix.Iovec
	rbuf, wbuf  [][]byte
}

func newBufs(n int) *bufs {
	b := &bufs{in: make([]mmsghdr, n), out: make([]mmsghdr, n), inIov: make([]unix.Iovec, n), oIov: make([]unix.Iovec, n), rbuf: make([][]byte, n), wbuf: make([][]byte, n)}
	for i := range n {
		b.rbuf[i] = make([]byte, 512)
		b.wbuf[i] = make([]byte, 0, 512)
		b.inIov[i].Base = &b.rbuf[i][0]
		b.inIov[i].SetLen(512)
		b.in[i].hdr.Iov = &b.inIov[i]
		b.in[i].hdr.SetIovlen(1)
		b.out[i].hdr.Iov = &b.oIov[i]
		b.out[i].hdr.SetIovlen(1)
	}
	return b
}

// recv reads what answers are there (waiting for the first up to the
// socket's timeout) and matches them to their queries.
func (c *client) recv(b *bufs, record bool) {
	n, err := mmsg(unix.SYS_RECVMMSG, c.fd, b.in, unix.MSG_WAITFORONE)
	if err != nil {
		return // EAGAIN after the timeout; ECONNREFUSED when nobody listens
	}
	t := now()
	for i := range n {
		m := b.rbuf[i][:b.in[i].n]
		if len(m) < 12 || m[2]&0x80 == 0 {
			continue
		}
		id := binary.BigEndian.Uint16(m)
		s := c.sentAt[id].Swap(0)
		if s == 0 {
			c.stray++
			continue
		}
		c.answered++
		c.out.Add(-1)
		if record {
			c.lat = append(c.lat, t-s)
		}
	}
}

// full keeps the window filled until end, then waits for the stragglers.
func (c *client) full(end int64, seed int) {
	runtime.LockOSThread()
	b := newBufs(max(*batchN, *window))
	q := seed
	lastSweep := now()
	var y yielder
	for t := now(); t < end; t = now() {
		y.maybe(t)
		k := min(*window-int(c.out.Load()), *batchN)
		if k > 0 {
			for i := range k {
				w := append(b.wbuf[i][:0], queries[q%len(queries)]...)
				q++
				binary.BigEndian.PutUint16(w, c.take(t))
				b.wbuf[i] = w
				b.oIov[i].Base = &w[0]
				b.oIov[i].SetLen(len(w))
			}
			for sent := 0; sent < k; {
				n, err := mmsg(unix.SYS_SENDMMSG, c.fd, b.out[sent:k], 0)
				if err != nil {
					n = 1 // that one is lost; the sweep counts it
				}
				sent += n
			}
			c.sent.Add(int64(k))
			c.out.Add(int64(k))
		}
		c.recv(b, false)
		if t-lastSweep > int64(100*time.Millisecond) {
			c.sweep(t)
			lastSweep = t
		}
	}
	c.drain(b, false)
}

// drain reads answers for up to lostAfter and counts the rest lost.
func (c *client) drain(b *bufs, record bool) {
	for d := now() + int64(lostAfter); c.out.Load() > 0 && now() < d; {
		c.recv(b, record)
	}
	c.sweep(now() + int64(lostAfter) + 1)
}

func main() {
	flag.Parse()
	ra, err := net.ResolveUDPAddr("udp", *addr)
	if err != nil || *names < 1 || *sockets < 1 || *window < 1 || *batchN < 1 || *rate < 1 || (*mode != "full" && *mode != "rate") {
		fmt.Fprintln(os.Stderr, "loadgen: bad arguments; see -h")
		os.Exit(2)
	}
	for i := range *names {
		queries = append(queries, query(i))
	}
	clients := make([]*client, *sockets)
	for i := range clients {
		if clients[i], err = dial(ra); err != nil {
			fmt.Fprintln(os.Stderr, "loadgen: socket:", err)
			os.Exit(1)
		}
	}
	var ru0 unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru0)
	t0 := now()
	end := t0 + int64(*dur)
	var wg sync.WaitGroup
	switch *mode {
	case "full":
		for i, c := range clients {
			wg.Go(func() { c.full(end, i*7919) })
		}
	case "rate":
		var stop atomic.Bool
		var rwg sync.WaitGroup
		for _, c := range clients {
			rwg.Go(func() {
				runtime.LockOSThread()
				b := newBufs(32)
				var y yielder
				for !stop.Load() {
					y.maybe(now())
					c.recv(b, true)
				}
				c.drain(b, true)
			})
		}
		wg.Go(func() {
			runtime.LockOSThread()
			_ = unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0)
			period := int64(time.Second) / int64(*rate)
			var y yielder
			for i := 0; ; i++ {
				y.maybe(now())
				target := t0 + int64(i)*period
				if target >= end {
					break
				}
				if d := target - now(); d > 0 {
					ts := unix.NsecToTimespec(d)
					_ = unix.Nanosleep(&ts, nil)
				}
				c := clients[i%len(clients)]
				w := append([]byte(nil), queries[i%len(queries)]...)
				c.out.Add(1)
				id := c.take(now())
				binary.BigEndian.PutUint16(w, id)
				if _, err := unix.Write(c.fd, w); err != nil {
					if c.sentAt[id].Swap(0) != 0 {
						c.out.Add(-1)
						c.lost.Add(1)
					}
					continue
				}
				c.sent.Add(1)
			}
			stop.Store(true)
		})
		wg.Wait()
		rwg.Wait()
	}
	wg.Wait()
	elapsed := time.Duration(min(now(), end) - t0)
	var ru1 unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru1)
	cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
	var sent, answered, lost, stray int64
	var lat []int64
	for _, c := range clients {
		sent += c.sent.Load()
		answered += c.answered
		lost += c.lost.Load()
		stray += c.stray
		lat = append(lat, c.lat...)
	}
	cpuPerQ := float64(cpu.Microseconds()) / float64(max(answered, 1))
	if *mode == "full" {
		fmt.Printf("mode=full qps=%.0f sent=%d answered=%d lost=%d late=%d secs=%.2f loadgen_cpu_s=%.2f loadgen_cpu_us_per_query=%.2f\n",
			float64(answered)/elapsed.Seconds(), sent, answered, lost, stray, elapsed.Seconds(), cpu.Seconds(), cpuPerQ)
		return
	}
	slices.Sort(lat)
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[min(int(p*float64(len(lat))), len(lat)-1)]) / 1e3
	}
	var sum int64
	for _, l := range lat {
		sum += l
	}
	fmt.Printf("mode=rate rate=%d qps=%.0f sent=%d answered=%d lost=%d late=%d p50_us=%.1f p90_us=%.1f p99_us=%.1f avg_us=%.1f loadgen_cpu_s=%.2f loadgen_cpu_us_per_query=%.2f\n",
		*rate, float64(answered)/elapsed.Seconds(), sent, answered, lost, stray, pct(0.5), pct(0.9), pct(0.99), float64(sum)/float64(max(len(lat), 1))/1e3, cpu.Seconds(), cpuPerQ)
}
