package daemon

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"banger/internal/api"
)

// hub fans events out to /events subscribers. Slow subscribers drop events
// rather than block the daemon.
type hub struct {
	mu   sync.Mutex
	subs map[chan api.Event]struct{}
}

func newHub() *hub { return &hub{subs: map[chan api.Event]struct{}{}} }

func (h *hub) subscribe() (chan api.Event, func()) {
	ch := make(chan api.Event, 256)
	h.mu.Lock()
	h.subs[ch] = struct{}{}
	h.mu.Unlock()
	return ch, func() {
		h.mu.Lock()
		if _, ok := h.subs[ch]; ok {
			delete(h.subs, ch)
			close(ch)
		}
		h.mu.Unlock()
	}
}

func (h *hub) publish(ev api.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.subs {
		select {
		case ch <- ev:
		default:
		}
	}
}

// progressEnding are the calls whose vm.progress stages end with a
// vm.progress.end event, and the params field naming their VM.
var progressEnding = map[string]func(json.RawMessage) string{
	api.MethodVMCreate:  func(raw json.RawMessage) string { var p api.VMCreateParams; _ = json.Unmarshal(raw, &p); return p.Name },
	api.MethodVMStart:   refParam,
	api.MethodVMRestart: refParam,
}

func refParam(raw json.RawMessage) string {
	var p api.VMRef
	_ = json.Unmarshal(raw, &p)
	return p.Ref
}

// withProgressEnds wraps the calls that publish vm.progress so each one,
// whatever its outcome, ends with a vm.progress.end event published before
// its reply is written. The hub keeps one order per subscriber, so a client
// that sees the end event has seen every stage of the call before it, and
// can stop waiting for progress at once instead of on a quiet timer.
func (d *Daemon) withProgressEnds(m map[string]handler) map[string]handler {
	for method, ref := range progressEnding {
		h, ok := m[method]
		if !ok {
			continue
		}
		m[method] = func(ctx context.Context, raw json.RawMessage) (any, error) {
			res, err := h(ctx, raw)
			ev := api.Event{Kind: api.EventVMProgressEnd, Time: time.Now()}
			if r, ok := res.(api.VMResult); ok && err == nil && r.VM.ID != "" {
				ev.VMID, ev.VM = r.VM.ID, &api.VM{ID: r.VM.ID, Name: r.VM.Name, State: r.VM.State}
			} else if ev.Ref = ref(raw); ev.Ref != "" && method != api.MethodVMCreate {
				// A failed start: name the VM as well when it exists,
				// so a client waiting on its name or ID both match.
				if vm, rerr := d.resolve(ctx, ev.Ref); rerr == nil {
					ev.VMID, ev.VM = vm.ID, &api.VM{ID: vm.ID, Name: vm.Name, State: vm.State}
				}
			}
			d.events.publish(ev)
			return res, err
		}
	}
	return m
}
