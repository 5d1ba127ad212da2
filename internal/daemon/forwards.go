package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"banger/internal/api"
	"banger/internal/store"
)

// The forward manager holds the host listeners that tunnel to guest ports:
// a VM's published ports (--publish) while it runs, and, with auto_forward,
// one per TCP port a guest process listens on. Its bookkeeping is here; the
// host listeners and the agent calls are behind forwardBackend.

// forwardPollInterval is how often running VMs' guest listeners are read.
const forwardPollInterval = time.Second

// sshGuestPort is never auto-forwarded: `banger vm ssh` covers it.
const sshGuestPort = 22

// fwdVM names the VM a forward tunnels into.
type fwdVM struct {
	ID, Name  string
	VsockPath string
}

// heldListener is one host listener tunnelling to a guest port.
type heldListener interface {
	Addr() *net.TCPAddr
	Close() error
	Conns() int
}

// forwardBackend opens host listeners and reads guest listeners.
type forwardBackend interface {
	// listen holds addr ("127.0.0.1:8080"; port 0 picks a free one) until
	// closed, tunnelling each connection to the guest's loopback guestPort.
	// A taken address is an error wrapping syscall.EADDRINUSE. ctx bounds
	// the listener's life, not just the call.
	listen(ctx context.Context, addr string, vm fwdVM, guestPort int) (heldListener, error)
	// listeners returns the guest's listening TCP sockets, or an error
	// wrapping errOldAgent when its agent has no /v1/ports.
	listeners(ctx context.Context, vm fwdVM) ([]api.GuestListener, error)
}

// errOldAgent is a guest agent older than the ports protocol.
var errOldAgent = errors.New("the guest agent has no ports endpoint")

// forwarder is the forward manager.
type forwarder struct {
	back forwardBackend
	log  *slog.Logger
	emit func(api.Event)
	auto bool
	// ctx bounds every listener; closeAll cancels it.
	ctx    context.Context
	cancel context.CancelFunc

	mu  sync.Mutex
	vms map[string]*vmForwards
}

// vmForwards is what the manager holds for one running VM.
type vmForwards struct {
	vm        fwdVM
	pid       int       // the Firecracker process the forwards are for
	since     time.Time // when this record was made
	published []*heldForward
	auto      map[int]*heldForward // by guest port
	listeners []api.GuestListener  // as last read
	note      string               // why listeners are not known
	polling   bool
	// asleep: the VM is suspended and its forwards stay open; the next
	// process it runs under (the restore a connection wakes it with) takes
	// them over (entry).
	asleep bool
}

// heldForward is one forward, open (l != nil) or waiting for its port.
type heldForward struct {
	f api.Forward
	l heldListener
}

func newForwarder(back forwardBackend, auto bool, log *slog.Logger, emit func(api.Event)) *forwarder {
	ctx, cancel := context.WithCancel(context.Background())
	return &forwarder{back: back, log: log, emit: emit, auto: auto, ctx: ctx, cancel: cancel, vms: map[string]*vmForwards{}}
}

// entry returns the VM's record, making one for pid; a record for another
// process (the VM restarted behind the manager's back) is closed first.
// The caller holds m.mu.
func (m *forwarder) entry(vm fwdVM, pid int) *vmForwards {
	e := m.vms[vm.ID]
	if e != nil && e.pid != pid && e.asleep {
		e.pid, e.asleep, e.since, e.vm = pid, false, time.Now(), vm
		return e
	}
	if e != nil && e.pid != pid {
		m.closeLocked(e, "vm restarted")
		e = nil
	}
	if e == nil {
		e = &vmForwards{vm: vm, pid: pid, since: time.Now(), auto: map[int]*heldForward{}}
		m.vms[vm.ID] = e
	}
	return e
}

// holdPublished makes the VM's open published forwards exactly pubs:
// new ones are opened (and ones whose port was taken retried), removed ones
// closed. It returns the forwards it opened now.
func (m *forwarder) holdPublished(vm fwdVM, pid int, pubs []store.Published) []api.Forward {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ctx.Err() != nil {
		return nil
	}
	e := m.entry(vm, pid)
	var keep []*heldForward
	var opened []api.Forward
	for _, p := range pubs {
		i := slices.IndexFunc(e.published, func(h *heldForward) bool {
			return h.f.HostAddr == p.HostAddr && h.f.Requested == p.HostPort && h.f.GuestPort == p.GuestPort
		})
		var h *heldForward
		if i >= 0 {
			h = e.published[i]
			e.published = slices.Delete(e.published, i, i+1)
		} else {
			h = &heldForward{f: api.Forward{Kind: api.ForwardPublished, HostAddr: p.HostAddr, Requested: p.HostPort, GuestPort: p.GuestPort}}
		}
		if h.l == nil {
			m.openPublished(e, h)
			if h.l != nil {
				opened = append(opened, h.f)
			}
		}
		keep = append(keep, h)
	}
	for _, h := range e.published {
		m.closeForward(e, h, "unpublished")
	}
	e.published = keep
	return opened
}

// openPublished listens for a published forward on exactly the port asked
// for; a failure is kept on the forward and retried at the next poll.
func (m *forwarder) openPublished(e *vmForwards, h *heldForward) {
	addr := net.JoinHostPort(h.f.HostAddr, strconv.Itoa(h.f.Requested))
	l, err := m.back.listen(m.ctx, addr, e.vm, h.f.GuestPort)
	if err != nil {
		why := listenProblem(addr, err)
		if h.f.Error != why {
			m.log.Warn("published port not held", "vm", e.vm.Name, "host", addr, "guest_port", h.f.GuestPort, "err", err)
		}
		h.f.Error = why
		return
	}
	h.l, h.f.Error, h.f.HostPort = l, "", l.Addr().Port
	m.opened(e, h)
}

// listenProblem is one line on why addr could not be held.
func listenProblem(addr string, err error) string {
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return fmt.Sprintf("host address %s is taken by another program; retrying while the vm runs", addr)
	case errors.Is(err, syscall.EACCES):
		return fmt.Sprintf("listening on %s needs privileges this daemon lacks; publish a port of 1024 or more", addr)
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return fmt.Sprintf("host address %s is not an address of this host", addr)
	}
	return fmt.Sprintf("listening on %s: %v", addr, err)
}

// wantedAuto is the guest ports the VM's listeners should be forwarded
// from: TCP ports bound to loopback or to every address (the agent
// connects to the guest's 127.0.0.1), except SSH, published ones and
// systemd-resolved's stub resolver (127.0.0.53 and .54), which every
// Debian guest runs and nobody wants on the host.
func wantedAuto(ls []api.GuestListener, published []*heldForward) []int {
	var out []int
	for _, l := range ls {
		if l.Port < 1 || l.Port > 65535 || l.Port == sshGuestPort || slices.Contains(out, l.Port) {
			continue
		}
		if a, err := netip.ParseAddr(l.Addr); err == nil && (!a.IsLoopback() && !a.IsUnspecified() || resolvedStub(a)) {
			continue
		}
		if slices.ContainsFunc(published, func(h *heldForward) bool { return h.f.GuestPort == l.Port }) {
			continue
		}
		out = append(out, l.Port)
	}
	slices.Sort(out)
	return out
}

func resolvedStub(a netip.Addr) bool {
	a = a.Unmap()
	return a == netip.AddrFrom4([4]byte{127, 0, 0, 53}) || a == netip.AddrFrom4([4]byte{127, 0, 0, 54})
}

// applyListeners records the guest's listeners and, with auto_forward,
// opens a forward for each new one and closes those whose listener went
// away. note says why the listeners are unknown (ls is then ignored).
func (m *forwarder) applyListeners(vm fwdVM, pid int, ls []api.GuestListener, note string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ctx.Err() != nil {
		return
	}
	e := m.entry(vm, pid)
	e.note = note
	if note != "" {
		return // keep what is held: a slow agent is not a closed listener
	}
	e.listeners = ls
	if !m.auto {
		return
	}
	want := wantedAuto(ls, e.published)
	for port, h := range e.auto {
		if !slices.Contains(want, port) {
			m.closeForward(e, h, "guest listener closed")
			delete(e.auto, port)
		}
	}
	for _, port := range want {
		if _, ok := e.auto[port]; !ok {
			if h := m.openAuto(e, port); h != nil {
				e.auto[port] = h
			}
		}
	}
}

// openAuto listens on 127.0.0.1:<port> for the guest's port, or on a free
// unprivileged port when that one is privileged or taken, and says which.
func (m *forwarder) openAuto(e *vmForwards, port int) *heldForward {
	h := &heldForward{f: api.Forward{Kind: api.ForwardAuto, HostAddr: "127.0.0.1", GuestPort: port}}
	var l heldListener
	var err error
	if port >= 1024 {
		l, err = m.back.listen(m.ctx, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), e.vm, port)
		if err != nil && !errors.Is(err, syscall.EADDRINUSE) && !errors.Is(err, syscall.EACCES) {
			m.log.Warn("auto forward not opened", "vm", e.vm.Name, "guest_port", port, "err", err)
			return nil
		}
	}
	if l == nil {
		why := fmt.Sprintf("host port %d is privileged", port)
		if port >= 1024 {
			why = fmt.Sprintf("host port %d is taken", port)
		}
		if l, err = m.back.listen(m.ctx, "127.0.0.1:0", e.vm, port); err != nil {
			m.log.Warn("auto forward not opened", "vm", e.vm.Name, "guest_port", port, "err", err)
			return nil
		}
		h.f.Requested = port
		h.f.Note = fmt.Sprintf("%s; chose %d", why, l.Addr().Port)
	}
	h.l, h.f.HostPort = l, l.Addr().Port
	m.opened(e, h)
	return h
}

func (m *forwarder) opened(e *vmForwards, h *heldForward) {
	m.log.Info("forward opened", "vm", e.vm.Name, "kind", h.f.Kind, "host", h.f.Host(), "guest_port", h.f.GuestPort, "note", h.f.Note)
	m.event(e, "open", h.f)
}

// closeForward closes one forward of e and reports it. The caller holds m.mu.
func (m *forwarder) closeForward(e *vmForwards, h *heldForward, why string) {
	if h.l == nil {
		return
	}
	if err := h.l.Close(); err != nil {
		m.log.Warn("closing forward", "vm", e.vm.Name, "host", h.f.Host(), "err", err)
	}
	h.l = nil
	m.log.Info("forward closed", "vm", e.vm.Name, "kind", h.f.Kind, "host", h.f.Host(), "guest_port", h.f.GuestPort, "why", why)
	f := h.f
	f.Note = why
	m.event(e, "close", f)
	h.f.HostPort = 0
}

func (m *forwarder) event(e *vmForwards, stage string, f api.Forward) {
	if m.emit == nil {
		return
	}
	m.emit(api.Event{Kind: api.EventVMForward, Time: time.Now(), VM: &api.VM{ID: e.vm.ID, Name: e.vm.Name}, VMID: e.vm.ID,
		Stage: stage, Message: fmt.Sprintf("%s -> %s:%d (%s)", f.Host(), e.vm.Name, f.GuestPort, f.Kind), Forward: &f})
}

// closeVM closes every forward of the VM (it stopped, exited or is being
// deleted).
func (m *forwarder) closeVM(id, why string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e := m.vms[id]; e != nil {
		m.closeLocked(e, why)
	}
}

func (m *forwarder) closeLocked(e *vmForwards, why string) {
	for _, h := range e.published {
		m.closeForward(e, h, why)
	}
	for _, port := range slices.Sorted(maps.Keys(e.auto)) {
		m.closeForward(e, e.auto[port], why)
	}
	delete(m.vms, e.vm.ID)
}

// sleepThrough keeps the VM's forwards open across release, the teardown
// of a VM being suspended (which closes a VM's forwards): they stay open
// while it sleeps, and a connection to one wakes it (agentForwards.wake).
// A stop or delete of the suspended VM closes them as any other.
func (m *forwarder) sleepThrough(id string, release func()) {
	m.mu.Lock()
	e := m.vms[id]
	delete(m.vms, id)
	m.mu.Unlock()
	release()
	if e == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.vms[id] != nil || m.ctx.Err() != nil {
		m.closeLocked(e, "vm suspended")
		return
	}
	e.asleep = true
	m.vms[id] = e
}

// compact rebuilds the table of VMs at its present size (see resized).
func (m *forwarder) compact() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.vms = resized(m.vms)
}

// closeAll closes every forward (daemon shutdown); nothing opens after.
func (m *forwarder) closeAll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range m.vms {
		m.closeLocked(e, "daemon stopping")
	}
	m.cancel()
}

// forget drops VMs not in live (id -> pid, as listed at asOf): they
// stopped behind the manager's back, or restarted. A record made after
// asOf (a start that finished since) is newer than the list and kept, and
// so are those of VMs asleep (suspended).
func (m *forwarder) forget(live map[string]int, asOf time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, e := range m.vms {
		if e.since.After(asOf) || e.asleep {
			continue
		}
		if pid, ok := live[id]; !ok || pid != e.pid {
			m.closeLocked(e, "vm not running")
		}
	}
}

// startPoll marks the VM as being polled; false when a poll is under way
// or the manager holds forwards for another process of the VM (the list
// pid came from is older than that record; the next poll sees the new one).
func (m *forwarder) startPoll(vm fwdVM, pid int) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.vms[vm.ID]
	if e != nil && e.pid != pid {
		return false
	}
	if e == nil {
		e = m.entry(vm, pid)
	}
	if e.polling {
		return false
	}
	e.polling = true
	return true
}

func (m *forwarder) endPoll(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e := m.vms[id]; e != nil {
		e.polling = false
	}
}

// list returns the VM's forwards, published ones first (by host port),
// then automatic ones by guest port.
func (m *forwarder) list(id string) []api.Forward {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.vms[id]
	if e == nil {
		return nil
	}
	var out []api.Forward
	for _, h := range e.published {
		out = append(out, h.snapshot())
	}
	for _, port := range slices.Sorted(maps.Keys(e.auto)) {
		out = append(out, e.auto[port].snapshot())
	}
	return out
}

func (h *heldForward) snapshot() api.Forward {
	f := h.f
	if h.l != nil {
		f.Conns = h.l.Conns()
	}
	if f.Kind == api.ForwardPublished && f.Requested == f.HostPort {
		f.Requested = 0 // the port asked for is the one held
	}
	return f
}

// guestListeners is what the manager last read of the VM's listeners, and
// why it could not when note is set; ok is false when it holds nothing for
// the VM.
func (m *forwarder) guestListeners(id string) (ls []api.GuestListener, note string, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.vms[id]
	if e == nil {
		return nil, "", false
	}
	return slices.Clone(e.listeners), e.note, true
}

// listOrNil is list on a manager that may not exist (a daemon under test).
func (m *forwarder) listOrNil(id string) []api.Forward {
	if m == nil {
		return nil
	}
	return m.list(id)
}
