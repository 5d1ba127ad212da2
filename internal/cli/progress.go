package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

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
//
// stop is called once the call's reply is in. It returns as soon as the
// call's own vm.progress.end event has arrived (the daemon publishes it
// after the call's last stage and before its reply, so everything before it
// is already on the stream): the end event of every non-empty ref and of
// every VM ID passed to stop, or, when there is none of either (a create
// with a generated name that failed), one end event naming no VM.
func (a *app) showProgress(ctx context.Context, cl *client.Client, quiet bool, refs []string) func(ids ...string) {
	pr := a.startProgress(ctx, cl, quiet, refs)
	return func(ids ...string) {
		var exp progressWait
		for _, r := range append(ids, refs...) {
			if r != "" {
				exp.keys = append(exp.keys, r)
			}
		}
		exp.anon = len(exp.keys) == 0
		pr(exp)
	}
}

// progressWait names the vm.progress.end events a stopping display waits
// for: one for each key (a VM ID or name, or the ref a failed call named),
// and with anon one that names no VM.
type progressWait struct {
	keys []string
	anon bool
}

func (a *app) startProgress(ctx context.Context, cl *client.Client, quiet bool, refs []string) func(progressWait) {
	if quiet {
		return func(progressWait) {}
	}
	ctx, cancel := context.WithCancel(ctx)
	ch, _, err := cl.Events(ctx)
	if err != nil {
		cancel()
		return func(progressWait) {}
	}
	p := &progressPrinter{w: a.stderr, tty: a.isTerminal(a.stderr), refs: refs, start: time.Now()}
	finish := make(chan progressWait, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.run(ctx, ch, finish)
	}()
	return func(exp progressWait) {
		finish <- exp
		<-done
		cancel()
	}
}

// progressCalls collects the IDs of the VMs a batch command called the
// daemon for (fanOut notes each one), so its progress display knows whose
// end events to wait for.
type progressCalls struct {
	mu  sync.Mutex
	ids []string
}

type progressCallsKey struct{}

func withProgressCalls(ctx context.Context) (context.Context, *progressCalls) {
	pc := &progressCalls{}
	return context.WithValue(ctx, progressCallsKey{}, pc), pc
}

// noteProgressCall records that the daemon is called for vm id, when ctx
// carries a progressCalls.
func noteProgressCall(ctx context.Context, id string) {
	if pc, ok := ctx.Value(progressCallsKey{}).(*progressCalls); ok {
		pc.mu.Lock()
		pc.ids = append(pc.ids, id)
		pc.mu.Unlock()
	}
}

func (pc *progressCalls) wait() progressWait {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	return progressWait{keys: append([]string(nil), pc.ids...)}
}

// progressPrinter renders progress events.
type progressPrinter struct {
	w     io.Writer
	tty   bool
	refs  []string
	start time.Time

	ends     map[string]bool // vm.progress.end seen, by VM ID, name and ref
	anonEnds int             // vm.progress.end events naming no VM

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

// The spinner: bubbles' MiniDot, kept here so plain commands do not link
// (and initialise) the bubbles spinner package.
var (
	spinnerFrames = []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}
	spinnerFPS    = time.Second / 12
)

// progressDrain bounds how long stop waits for end events after the call
// returned: they are published before the reply, so they miss it only when
// the stream dropped them (a subscriber too slow) or the daemon predates
// them.
const progressDrain = 500 * time.Millisecond

func (p *progressPrinter) run(ctx context.Context, ch <-chan api.Event, finish <-chan progressWait) {
	var tick, hard <-chan time.Time
	if p.tty {
		t := time.NewTicker(spinnerFPS)
		defer t.Stop()
		tick = t.C
	}
	defer p.clear()
	var want *progressWait
	for {
		if want != nil && p.ended(*want) {
			return
		}
		select {
		case ev, ok := <-ch:
			if !ok {
				return
			}
			switch {
			case ev.Kind == api.EventVMProgressEnd:
				p.noteEnd(ev)
			case p.wanted(ev):
				p.stage(ev)
			}
		case w := <-finish:
			finish, want = nil, &w
			hard = time.After(progressDrain)
		case <-hard:
			return
		case <-tick:
			p.spin()
		case <-ctx.Done():
			return
		}
	}
}

// noteEnd records a vm.progress.end event under every name it carries.
func (p *progressPrinter) noteEnd(ev api.Event) {
	if p.ends == nil {
		p.ends = map[string]bool{}
	}
	keys := []string{ev.VMID, ev.Ref}
	if ev.VM != nil {
		keys = append(keys, ev.VM.ID, ev.VM.Name)
	}
	named := false
	for _, k := range keys {
		if k != "" {
			p.ends[k] = true
			named = true
		}
	}
	if !named {
		p.anonEnds++
	}
}

// ended reports whether every end event w waits for has arrived.
func (p *progressPrinter) ended(w progressWait) bool {
	for _, k := range w.keys {
		if !p.ends[k] {
			return false
		}
	}
	return !w.anon || p.anonEnds > 0
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
	frames := spinnerFrames
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
