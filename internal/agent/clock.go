package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// PathClock is the clock endpoint: POST a ClockRequest and the agent steps
// the guest's CLOCK_REALTIME to it. The daemon calls it after restoring a
// snapshot, whose guest clock stands where it was at suspend.
const PathClock = "/v1/clock"

// ClockRequest is the body of POST /v1/clock.
type ClockRequest struct {
	// UnixNano is the host's time when the request was sent.
	UnixNano int64 `json:"unix_nano"`
}

// ClockResult is the answer: the guest's time just before the step.
type ClockResult struct {
	PreviousUnixNano int64 `json:"previous_unix_nano"`
}

// setRealtime sets CLOCK_REALTIME (the real guest's default SetClock).
func setRealtime(t time.Time) error {
	ts := unix.NsecToTimespec(t.UnixNano())
	if err := unix.ClockSettime(unix.CLOCK_REALTIME, &ts); err != nil {
		return fmt.Errorf("clock_settime(CLOCK_REALTIME): %w", err)
	}
	return nil
}

func (s *server) clock(w http.ResponseWriter, r *http.Request) {
	var req ClockRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 4096))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || req.UnixNano <= 0 {
		writeJSON(w, http.StatusBadRequest, errorBody{Error: "body must be {\"unix_nano\": <positive integer>}"})
		return
	}
	prev := s.opts.Now()
	if err := s.opts.SetClock(time.Unix(0, req.UnixNano)); err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, ClockResult{PreviousUnixNano: prev.UnixNano()})
}

// SetClock asks the agent to step the guest clock to t. It returns how far
// the guest clock was behind t (negative: ahead).
func (c *Client) SetClock(ctx context.Context, t time.Time) (time.Duration, error) {
	body, _ := json.Marshal(ClockRequest{UnixNano: t.UnixNano()})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://agent"+PathClock, bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("building agent request %s: %w", PathClock, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("calling agent %s: %w", PathClock, unwrapURLError(err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return 0, fmt.Errorf("reading agent %s response: %w", PathClock, err)
	}
	if resp.StatusCode != http.StatusOK {
		var eb errorBody
		msg := strings.TrimSpace(string(data))
		if json.Unmarshal(data, &eb) == nil && eb.Error != "" {
			msg = eb.Error
		}
		return 0, fmt.Errorf("agent %s answered %s: %s", PathClock, resp.Status, msg)
	}
	var res ClockResult
	if err := json.Unmarshal(data, &res); err != nil {
		return 0, fmt.Errorf("decoding agent %s response: %w", PathClock, err)
	}
	return t.Sub(time.Unix(0, res.PreviousUnixNano)), nil
}
