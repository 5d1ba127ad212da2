package tui

import (
	"context"
	"fmt"
	"time"

	tea "charm.land/bubbletea/v2"
)

// Run shows the UI on the terminal until the user quits or ctx ends.
func Run(ctx context.Context, d Daemon, opts Options) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p := tea.NewProgram(New(d, opts), tea.WithContext(ctx))
	go Pump(ctx, d, 2*time.Second, p.Send)
	if _, err := p.Run(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("running the terminal ui: %w", err)
	}
	return nil
}
