package dns

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	mdns "github.com/miekg/dns"
)

// WakeFunc wakes the suspended VM published as name (lowercase, without
// ".vm") and returns once it runs again, or waking failed.
type WakeFunc func(ctx context.Context, name string) error

// wakeTimeout bounds one wake started by a query; it runs on after the
// query has been answered.
const wakeTimeout = 2 * time.Minute

// WakingHandler answers like Handler, except that a query for a name the
// Records mark asleep first wakes that VM and answers once it runs again,
// or after maxWait, whichever comes first (the answer is the same address
// either way; the wake goes on in the background). Answering after the
// resume is what keeps the first connection working: a client that got the
// address at once would send its SYN to a VM that is not there yet and,
// depending on its ARP and SYN retries, wait a second or more, or fail.
// Concurrent queries for one name share one wake. The answering itself
// stays in the pure Handler.
type WakingHandler struct {
	*Handler
	records *Records
	wake    WakeFunc
	maxWait time.Duration
	log     *slog.Logger

	mu       sync.Mutex
	inflight map[string]chan struct{}
}

// NewWakingHandler wraps h, which must read records.
func NewWakingHandler(h *Handler, records *Records, wake WakeFunc, maxWait time.Duration, log *slog.Logger) *WakingHandler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &WakingHandler{Handler: h, records: records, wake: wake, maxWait: maxWait, log: log, inflight: map[string]chan struct{}{}}
}

// ServeDNS implements dns.Handler.
func (w *WakingHandler) ServeDNS(rw mdns.ResponseWriter, r *mdns.Msg) {
	if name := w.sleeper(r); name != "" {
		w.await(name)
	}
	w.Handler.ServeDNS(rw, r)
}

// AnswerWire takes the fast path only while no VM is asleep, so that a
// query for a sleeping name always reaches ServeDNS.
func (w *WakingHandler) AnswerWire(q, buf []byte) ([]byte, bool) {
	if w.records.AnyAsleep() {
		return nil, false
	}
	return w.Handler.AnswerWire(q, buf)
}

// MustWait reports whether the raw query is for a sleeping name, so the
// UDP listener answers it on its own goroutine instead of holding up the
// batch behind the wake.
func (w *WakingHandler) MustWait(raw []byte) bool {
	if !w.records.AnyAsleep() {
		return false
	}
	var m mdns.Msg
	if err := m.Unpack(raw); err != nil {
		return false
	}
	return w.sleeper(&m) != ""
}

// sleeper is the sleeping name a query asks about, or "".
func (w *WakingHandler) sleeper(r *mdns.Msg) string {
	if r.Response || r.Opcode != mdns.OpcodeQuery || len(r.Question) != 1 || !w.records.AnyAsleep() {
		return ""
	}
	name := strings.ToLower(r.Question[0].Name)
	label, ok := strings.CutSuffix(name, "."+Zone)
	if !ok || label == "" || !w.records.Asleep(label) {
		return ""
	}
	return label
}

// await starts (or joins) the wake of name and waits for it, at most
// maxWait.
func (w *WakingHandler) await(name string) {
	w.mu.Lock()
	done, ok := w.inflight[name]
	if !ok {
		done = make(chan struct{})
		w.inflight[name] = done
		go w.run(name, done)
	}
	w.mu.Unlock()
	t := time.NewTimer(w.maxWait)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		w.log.Info("answering a query for a waking vm before it is up", "vm", name, "waited", w.maxWait.String())
	}
}

func (w *WakingHandler) run(name string, done chan struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), wakeTimeout)
	t0 := time.Now()
	err := w.wake(ctx, name)
	cancel()
	if err != nil {
		w.log.Warn("waking vm for a dns query", "vm", name, "err", err)
	} else {
		w.log.Info("woke vm for a dns query", "vm", name, "took", time.Since(t0).Round(time.Millisecond).String())
	}
	w.mu.Lock()
	delete(w.inflight, name)
	w.mu.Unlock()
	close(done)
}
