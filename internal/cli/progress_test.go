package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"banger/internal/api"
)

func TestProgressPrinter(t *testing.T) {
	dev := &api.VM{ID: "a1b2c3d4", Name: "dev"}
	other := &api.VM{ID: "ffff0000", Name: "other"}
	evs := []api.Event{
		{Kind: api.EventVMProgress, VM: dev, VMID: dev.ID, Stage: "storage", Message: "root disk copy", Elapsed: 0.12},
		{Kind: api.EventVMState, VM: dev, VMID: dev.ID},
		{Kind: api.EventVMProgress, VM: other, VMID: other.ID, Stage: "network", Message: "tap bgt-ffff0000", Elapsed: 0.3},
		{Kind: api.EventVMProgress, VM: dev, VMID: dev.ID, Stage: "agent", Message: "healthy in 1.5 ms", Elapsed: 1.25},
	}
	run := func(tty bool, refs []string) string {
		var buf bytes.Buffer
		p := &progressPrinter{w: &buf, tty: tty, refs: refs, start: time.Now()}
		ch := make(chan api.Event, len(evs))
		for _, e := range evs {
			ch <- e
		}
		close(ch)
		p.run(context.Background(), ch, nil)
		return buf.String()
	}
	t.Run("plain", func(t *testing.T) {
		got := run(false, []string{"dev"})
		want := "  storage       0.12s  root disk copy\n  agent         1.25s  healthy in 1.5 ms\n"
		if got != want {
			t.Fatalf("got\n%q\nwant\n%q", got, want)
		}
	})
	t.Run("plain by id prefix, two vms", func(t *testing.T) {
		got := run(false, []string{"a1b2", "other"})
		for _, want := range []string{"  dev: storage", "  other: network", "  dev: agent"} {
			if !strings.Contains(got, want) {
				t.Fatalf("missing %q in\n%s", want, got)
			}
		}
	})
	t.Run("terminal", func(t *testing.T) {
		got := run(true, []string{"dev"})
		if !strings.Contains(got, "  ✓ storage       0.12s  root disk copy\n") || !strings.Contains(got, "  ✓ agent         1.25s  healthy in 1.5 ms\n") {
			t.Fatalf("stage lines missing:\n%q", got)
		}
		if strings.Contains(got, "other") {
			t.Fatalf("printed another vm's progress:\n%q", got)
		}
		// The spinner line is redrawn in place and cleared at the end.
		if !strings.Contains(got, "\r\x1b[K") || !strings.HasSuffix(got, "\r\x1b[K") {
			t.Fatalf("spinner line not redrawn/cleared:\n%q", got)
		}
	})
}

// After the reply, the display ends as soon as the call's own end event
// is in, with every stage before it printed, without the stream closing.
func TestProgressEndsOnItsEndEvent(t *testing.T) {
	dev := &api.VM{ID: "a1b2c3d4", Name: "dev"}
	other := &api.VM{ID: "ffff0000", Name: "other"}
	cases := []struct {
		name string
		wait progressWait
		evs  []api.Event
	}{
		{"by name", progressWait{keys: []string{"dev"}}, []api.Event{
			{Kind: api.EventVMProgressEnd, VM: other, VMID: other.ID},
			{Kind: api.EventVMProgress, VM: dev, VMID: dev.ID, Stage: "dns", Message: "dev.vm", Elapsed: 1.5},
			{Kind: api.EventVMProgressEnd, VM: dev, VMID: dev.ID},
		}},
		{"by id, failed call", progressWait{keys: []string{dev.ID}}, []api.Event{
			{Kind: api.EventVMProgress, VM: dev, VMID: dev.ID, Stage: "dns", Message: "dev.vm", Elapsed: 1.5},
			{Kind: api.EventVMProgressEnd, Ref: dev.ID},
		}},
		{"anonymous", progressWait{anon: true}, []api.Event{
			{Kind: api.EventVMProgressEnd, VM: other, VMID: other.ID},
			{Kind: api.EventVMProgress, VM: dev, VMID: dev.ID, Stage: "dns", Message: "dev.vm", Elapsed: 1.5},
			{Kind: api.EventVMProgressEnd},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			p := &progressPrinter{w: &buf, refs: []string{"dev"}, start: time.Now()}
			ch := make(chan api.Event) // never closed: only the end event may end the run
			finish := make(chan progressWait, 1)
			done := make(chan struct{})
			go func() { defer close(done); p.run(context.Background(), ch, finish) }()
			finish <- tc.wait // the reply came first; the events follow
			for _, ev := range tc.evs {
				select {
				case ch <- ev:
				case <-done:
					t.Fatalf("ended before %+v", ev)
				}
			}
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("still waiting after its end event")
			}
			if want := "  dns           1.50s  dev.vm\n"; buf.String() != want {
				t.Fatalf("got %q, want %q", buf.String(), want)
			}
		})
	}
	t.Run("nothing to wait for", func(t *testing.T) {
		p := &progressPrinter{w: &bytes.Buffer{}, start: time.Now()}
		finish := make(chan progressWait, 1)
		finish <- progressWait{}
		done := make(chan struct{})
		go func() { defer close(done); p.run(context.Background(), make(chan api.Event), finish) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("waited with nothing to wait for")
		}
	})
	t.Run("an end event that never comes is waited for only so long", func(t *testing.T) {
		p := &progressPrinter{w: &bytes.Buffer{}, start: time.Now()}
		finish := make(chan progressWait, 1)
		finish <- progressWait{keys: []string{"dev"}}
		done := make(chan struct{})
		go func() { defer close(done); p.run(context.Background(), make(chan api.Event), finish) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("no bound on the wait")
		}
	})
}

func TestProgressCalls(t *testing.T) {
	noteProgressCall(context.Background(), "ignored") // no collector: nothing happens
	ctx, calls := withProgressCalls(context.Background())
	noteProgressCall(ctx, "a")
	noteProgressCall(ctx, "b")
	if w := calls.wait(); strings.Join(w.keys, ",") != "a,b" || w.anon {
		t.Fatalf("wait %+v, want keys a,b", w)
	}
}
