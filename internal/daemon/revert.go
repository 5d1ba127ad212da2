package daemon

import (
	"context"
	"log/slog"
	"time"
)

// reverter collects undo steps as a multi-step change goes, and runs them
// in reverse when the change fails.
type reverter struct {
	steps []revertStep
	log   *slog.Logger
}

type revertStep struct {
	name string
	fn   func(ctx context.Context) error
}

func newReverter(log *slog.Logger) *reverter { return &reverter{log: log} }

func (r *reverter) add(name string, fn func(ctx context.Context) error) {
	r.steps = append(r.steps, revertStep{name: name, fn: fn})
}

// fail runs the undo steps in reverse order on a fresh context, so a
// cancelled request still cleans up.
func (r *reverter) fail() {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := len(r.steps) - 1; i >= 0; i-- {
		s := r.steps[i]
		if err := s.fn(ctx); err != nil {
			r.log.Warn("undo step failed", "step", s.name, "err", err)
		}
	}
	r.steps = nil
}

// success drops the undo steps.
func (r *reverter) success() { r.steps = nil }
