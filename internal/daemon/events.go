package daemon

import (
	"sync"

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
