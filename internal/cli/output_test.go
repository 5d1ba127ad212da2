package cli

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"text/tabwriter"
	"time"
)

// The table prints byte for byte what text/tabwriter printed before it:
// ragged rows, empty cells, wide runes, and cell text holding tabs,
// newlines, form feeds and tabwriter's escape byte.
func TestTableMatchesTabwriter(t *testing.T) {
	pieces := []string{"", "a", "dev", "stopped", "10.200.0.2", "1 GiB", "héllo", "日本語", "-", "x y", "\t", "\n", "\f", "\v", "\xff", "a\xffb\xff", "  "}
	r := rand.New(rand.NewPCG(1, 2))
	check := func(rows [][]string) {
		t.Helper()
		var want, got bytes.Buffer
		tw := tabwriter.NewWriter(&want, 0, 0, 2, ' ', 0)
		for _, row := range rows {
			tw.Write([]byte(strings.Join(row, "\t") + "\n"))
		}
		tw.Flush()
		tb := newTable(&got)
		for _, row := range rows {
			tb.row(row...)
		}
		tb.flush()
		if got.String() != want.String() {
			t.Fatalf("rows %q:\ngot\n%q\nwant\n%q", rows, got.String(), want.String())
		}
	}
	check(nil)
	check([][]string{{"NAME", "ID", "STATE"}, {"dev", "a1b2", "running"}, {"longer-name", "ff", "stopped"}})
	for range 3000 {
		var rows [][]string
		for range r.IntN(6) {
			var row []string
			for range r.IntN(5) {
				var c string
				for range r.IntN(3) {
					c += pieces[r.IntN(len(pieces))]
				}
				row = append(row, c)
			}
			rows = append(rows, row)
		}
		check(rows)
	}
}

// A table used twice starts afresh.
func TestTableFlushResets(t *testing.T) {
	var b bytes.Buffer
	tb := newTable(&b)
	tb.row("a\tb", "c")
	tb.flush()
	tb.row("x", "y")
	tb.flush()
	if want := "a  b  c\nx  y\n"; b.String() != want {
		t.Fatalf("got %q, want %q", b.String(), want)
	}
}

// humanDuration reads as the fmt.Sprintf forms it replaced.
func TestHumanDuration(t *testing.T) {
	old := func(d time.Duration) string {
		if d < 0 {
			d = -d
		}
		switch {
		case d < time.Second:
			return fmt.Sprintf("%dms", d.Milliseconds())
		case d < time.Minute:
			return fmt.Sprintf("%ds", int(d.Seconds()))
		case d < time.Hour:
			return fmt.Sprintf("%dm%ds", int(d.Minutes()), int(d.Seconds())%60)
		case d < 48*time.Hour:
			return fmt.Sprintf("%dh%dm", int(d.Hours()), int(d.Minutes())%60)
		default:
			return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
		}
	}
	for _, d := range []time.Duration{0, 999 * time.Microsecond, 5 * time.Millisecond, time.Second, 59*time.Second + 999*time.Millisecond,
		time.Minute, 61 * time.Second, 59*time.Minute + 59*time.Second, time.Hour, 47*time.Hour + 59*time.Minute, 48 * time.Hour,
		400*24*time.Hour + 5*time.Hour + 3*time.Minute, -90 * time.Second} {
		if got, want := humanDuration(d), old(d); got != want {
			t.Errorf("%v: %q, want %q", d, got, want)
		}
	}
	now := time.Now()
	if got := ago(now.Add(-125*time.Second), now); got != "2m5s ago" {
		t.Errorf("ago: %q", got)
	}
	if got := ago(time.Time{}, now); got != "-" {
		t.Errorf("ago of zero: %q", got)
	}
}
