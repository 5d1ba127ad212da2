package firecracker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
)

func TestBalloonRequestBodies(t *testing.T) {
	tests := []struct {
		name string
		call func(context.Context, *Client) error
	}{
		{"balloon_reporting", func(ctx context.Context, c *Client) error {
			return c.PutBalloon(ctx, Balloon{AmountMib: 0, DeflateOnOOM: true, StatsPollingIntervalS: 5, FreePageReporting: true})
		}},
		{"balloon_minimal", func(ctx context.Context, c *Client) error {
			return c.PutBalloon(ctx, Balloon{AmountMib: 64})
		}},
		{"balloon_patch", func(ctx context.Context, c *Client) error { return c.PatchBalloon(ctx, 128) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeAPI(t, filepath.Join(shortDir(t), "api.sock"), nil)
			if err := tt.call(t.Context(), NewClient(f.sock)); err != nil {
				t.Fatalf("call: %v", err)
			}
			reqs := f.requests()
			if len(reqs) != 1 {
				t.Fatalf("server saw %d requests, want 1", len(reqs))
			}
			golden(t, tt.name, fmt.Sprintf("%s %s\n%s\n", reqs[0].Method, reqs[0].Path, reqs[0].Body))
		})
	}
}

func TestBalloonGets(t *testing.T) {
	f := newFakeAPI(t, filepath.Join(shortDir(t), "api.sock"), func(r *http.Request, _ []byte) (int, string) {
		switch r.URL.Path {
		case "/balloon":
			return 200, `{"amount_mib":0,"deflate_on_oom":true,"stats_polling_interval_s":5,"free_page_hinting":false,"free_page_reporting":true}`
		case "/balloon/statistics":
			return 200, `{"target_pages":0,"actual_pages":0,"target_mib":0,"actual_mib":0,"free_memory":700000000,"total_memory":1000000000,"available_memory":800000000,"minor_faults":12}`
		}
		return 400, `{"fault_message":"Invalid request method and/or path"}`
	})
	c := NewClient(f.sock)
	b, err := c.GetBalloon(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if want := (Balloon{DeflateOnOOM: true, StatsPollingIntervalS: 5, FreePageReporting: true}); b != want {
		t.Errorf("GetBalloon = %+v, want %+v", b, want)
	}
	s, err := c.GetBalloonStats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if s.TotalMemory != 1000000000 || s.AvailableMemory != 800000000 || s.FreeMemory != 700000000 || s.MinorFaults != 12 {
		t.Errorf("GetBalloonStats = %+v", s)
	}
}

func TestBalloonStatsDisabled(t *testing.T) {
	const msg = "Statistics for the balloon device are not enabled"
	f := newFakeAPI(t, filepath.Join(shortDir(t), "api.sock"), func(r *http.Request, _ []byte) (int, string) {
		return 400, `{"fault_message":"` + msg + `"}`
	})
	_, err := NewClient(f.sock).GetBalloonStats(t.Context())
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != 400 || ae.FaultMessage != msg {
		t.Fatalf("err = %v, want the 400 with %q", err, msg)
	}
}

func TestSupportsFreePageReporting(t *testing.T) {
	for v, want := range map[string]bool{
		"1.16.1": true, "v1.17.0-dev": true, "Firecracker v1.14.0": true, "1.14": true, "2.0.0": true,
		"1.13.1": false, "v1.7.0": false, "0.25.2": false, "": false, "dev": false, "1": false, "1.x": false,
	} {
		if got := SupportsFreePageReporting(v); got != want {
			t.Errorf("SupportsFreePageReporting(%q) = %v, want %v", v, got, want)
		}
	}
}
