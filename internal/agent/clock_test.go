package agent

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestSetClock(t *testing.T) {
	var got []time.Time
	guestNow := time.Unix(1_700_000_000, 0) // the guest's clock stood still while it was suspended
	h := Handler(Options{Now: func() time.Time { return guestNow }, SetClock: func(t time.Time) error {
		got = append(got, t)
		return nil
	}})
	cl := serveUnix(t, h)
	host := time.Unix(1_700_003_600, 123)
	behind, err := cl.SetClock(context.Background(), host)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !got[0].Equal(host) {
		t.Fatalf("SetClock hook got %v, want [%v]", got, host)
	}
	if behind != host.Sub(guestNow) {
		t.Fatalf("behind = %v, want %v", behind, host.Sub(guestNow))
	}
}

func TestSetClockFailsAndLegacy(t *testing.T) {
	h := Handler(Options{SetClock: func(time.Time) error { return errors.New("clock_settime(CLOCK_REALTIME): operation not permitted") }})
	if _, err := serveUnix(t, h).SetClock(context.Background(), time.Now()); err == nil || !strings.Contains(err.Error(), "not permitted") {
		t.Fatalf("failing SetClock: %v", err)
	}
	legacy := serveUnix(t, Handler(Options{Legacy: true}))
	if _, err := legacy.SetClock(context.Background(), time.Now()); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("legacy agent: %v, want a 404", err)
	}
}
