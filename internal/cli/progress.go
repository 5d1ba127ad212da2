package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"charm.land/bubbles/v2/spinner"
	"golang.org/x/sys/unix"

	"banger/internal/api"
	"banger/internal/client"
)

// isTerminal reports whether w is a terminal that can redraw a line.
func (a *app) isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok || a.getenv("TERM") == "dumb" {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// showProgress prints vm.progress events for the VMs named by refs (a name
// or an ID prefix; an empty ref matches any VM) to stderr until the returned
// stop is called. On a terminal a spinner line shows the running total under
// the finished stages; otherwise each stage is one plain line. quiet prints
// nothing.
func (a *app) showProgress(ctx context.Context, cl *client.Client, quiet bool, refs []string) func() {
	if quiet {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	ch, _, err := cl.Events(ctx)
	if err != nil {
		cancel()
		return func() {}
	}
	p := &progressPrinter{w: a.stderr, tty: a.isTerminal(a.stderr), refs: refs, start: time.Now()}
	finish := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.run(ctx, ch, finish)
	}()
	return func() {
		// The call's last stages were published just before its reply:
		// let them arrive before closing the stream.
		close(finish)
		<-done
		cancel()
	}
}

// progressPrinter renders progress events.
type progressPrinter struct {
	w     io.Writer
	tty   bool
	refs  []string
	start time.Time

	mu      sync.Mutex
	frame   int
	current string // VM the spinner is waiting on
	shown   bool   // a spinner line is on screen
}

func (p *progressPrinter) wanted(ev api.Event) bool {
	if ev.Kind != api.EventVMProgress {
		return false
	}
	if len(p.refs) == 0 {
		return true
	}
	for _, r := range p.refs {
		if r == "" || (ev.VM != nil && ev.VM.Name == r) || (r != "" && strings.HasPrefix(ev.VMID, r)) {
			return true
		}
	}
	return false
}

// progressDrain bounds how long progress waits for the last stages after
// the call returned: until the stream is quiet for progressQuiet.
const (
	progressDrain = 500 * time.Millisecond
	progressQuiet = 100 * time.Millisecond
)

func (p *progressPrinter) run(ctx context.Context, ch <-chan api.Event, finish <-chan struct{}) {
	var tick, quiet, hard <-chan time.Time
	if p.tty {
		t := time.NewTicker(spinner.MiniDot.FPS)
		defer t.Stop()
		tick = t.C
	}
	defer p.clear()
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				return
			}
			if p.wanted(ev) {
				p.stage(ev)
			}
			if quiet != nil {
				quiet = time.After(progressQuiet)
			}
		case <-finish:
			finish = nil
			quiet, hard = time.After(progressQuiet), time.After(progressDrain)
		case <-quiet:
			return
		case <-hard:
			return
		case <-tick:
			p.spin()
		case <-ctx.Done():
			return
		}
	}
}

func (p *progressPrinter) label(ev api.Event) string {
	name := ev.VMID
	if ev.VM != nil {
		name = ev.VM.Name
	}
	if len(p.refs) > 1 {
		return name + ": "
	}
	return ""
}

// stage prints one finished stage.
func (p *progressPrinter) stage(ev api.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	line := fmt.Sprintf("%-11s %6.2fs  %s", ev.Stage, ev.Elapsed, ev.Message)
	if !p.tty {
		fmt.Fprintf(p.w, "  %s%s\n", p.label(ev), line)
		return
	}
	if p.shown {
		fmt.Fprint(p.w, "\r\x1b[K")
	}
	fmt.Fprintf(p.w, "  ✓ %s%s\n", p.label(ev), line)
	p.current = strings.TrimSuffix(p.label(ev), ": ")
	p.shown = false
	p.spinLocked()
}

func (p *progressPrinter) spin() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.spinLocked()
}

func (p *progressPrinter) spinLocked() {
	frames := spinner.MiniDot.Frames
	p.frame = (p.frame + 1) % len(frames)
	what := "working"
	if p.current != "" {
		what = p.current + " working"
	}
	fmt.Fprintf(p.w, "\r\x1b[K  %s %s %5.1fs", frames[p.frame], what, time.Since(p.start).Seconds())
	p.shown = true
}

// clear removes the spinner line.
func (p *progressPrinter) clear() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.shown {
		fmt.Fprint(p.w, "\r\x1b[K")
		p.shown = false
	}
}
