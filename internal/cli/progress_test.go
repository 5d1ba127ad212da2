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
