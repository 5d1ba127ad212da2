package tui

import (
	"testing"

	"banger/internal/api"
)

func TestApplyForward(t *testing.T) {
	a := api.Forward{Kind: api.ForwardAuto, HostAddr: "127.0.0.1", HostPort: 3000, GuestPort: 3000}
	b := api.Forward{Kind: api.ForwardPublished, HostAddr: "127.0.0.1", HostPort: 8080, GuestPort: 80}
	fs := applyForward(nil, "open", a)
	fs = applyForward(fs, "open", b)
	fs = applyForward(fs, "open", a) // reported twice: once
	if got := forwardsLine(fs); got != "127.0.0.1:8080→80  127.0.0.1:3000→3000" && got != "127.0.0.1:3000→3000  127.0.0.1:8080→80" {
		t.Fatalf("line %q", got)
	}
	fs = applyForward(fs, "close", a)
	if len(fs) != 1 || fs[0].GuestPort != 80 {
		t.Fatalf("after close: %+v", fs)
	}
}
