package cli

import (
	"bufio"
	"encoding/json"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"
)

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table prints aligned columns exactly as text/tabwriter.NewWriter(w, 0,
// 0, 2, ' ', 0) would: a column is as wide as its widest cell plus two
// within each block of consecutive lines that have a cell there, and the
// last cell of a line is not padded. tabwriter itself costs a 500-row list
// a fifth of its instructions and writes every cell and padding run
// separately; this keeps the rows and writes the whole table through one
// buffer. A cell holding tabwriter's escape byte (0xff, never valid UTF-8)
// goes through tabwriter unchanged.
type table struct {
	w     io.Writer
	rows  [][]string
	plain bool // no cell holds a tab, newline or 0xff
}

func newTable(w io.Writer) *table { return &table{w: w, plain: true} }

// grow makes room for n more rows.
func (t *table) grow(n int) { t.rows = slices.Grow(t.rows, n) }

func (t *table) row(cols ...string) {
	for _, c := range cols {
		if t.plain && !plainCell(c) {
			t.plain = false
		}
	}
	if cols == nil {
		cols = []string{""} // nil marks a form feed
	}
	t.rows = append(t.rows, cols)
}

// plainCell reports a cell with none of tabwriter's control bytes.
func plainCell(c string) bool {
	for i := 0; i < len(c); i++ {
		switch c[i] {
		case '\t', '\v', '\n', '\f', 0xff:
			return false
		}
	}
	return true
}

func (t *table) flush() {
	rows, plain := t.rows, t.plain
	t.rows, t.plain = nil, true
	if !plain {
		var raw strings.Builder
		for _, r := range rows {
			raw.WriteString(strings.Join(r, "\t"))
			raw.WriteByte('\n')
		}
		if strings.Contains(raw.String(), "\xff") {
			tw := tabwriter.NewWriter(t.w, 0, 0, 2, ' ', 0)
			io.WriteString(tw, raw.String())
			tw.Flush()
			return
		}
		rows = splitCells(raw.String())
	}
	buf := bufio.NewWriterSize(t.w, 32<<10)
	formatColumns(buf, rows, 0, len(rows), nil)
	buf.Flush()
}

// splitCells splits text into lines and cells as tabwriter does: tab and
// vertical tab end a cell, newline and form feed a line; a form feed also
// ends the column blocks (a nil line here).
func splitCells(text string) [][]string {
	var lines [][]string
	var line []string
	start := 0
	for i := 0; i < len(text); i++ {
		switch text[i] {
		case '\t', '\v':
			line = append(line, text[start:i])
			start = i + 1
		case '\n', '\f':
			lines = append(lines, append(line, text[start:i]))
			if text[i] == '\f' {
				lines = append(lines, nil)
			}
			line, start = nil, i+1
		}
	}
	return lines
}

// formatColumns is tabwriter's format: lines [l0, l1) whose columns left of
// len(widths) are already sized.
func formatColumns(w *bufio.Writer, lines [][]string, l0, l1 int, widths []int) {
	column := len(widths)
	for this := l0; this < l1; this++ {
		if column >= len(lines[this])-1 {
			continue
		}
		writeLines(w, lines, l0, this, widths)
		l0 = this
		width := 0
		for ; this < l1; this++ {
			if column >= len(lines[this])-1 {
				break
			}
			if cw := utf8.RuneCountInString(lines[this][column]) + 2; cw > width {
				width = cw
			}
		}
		formatColumns(w, lines, l0, this, append(widths, width))
		l0 = this
	}
	writeLines(w, lines, l0, l1, widths)
}

func writeLines(w *bufio.Writer, lines [][]string, l0, l1 int, widths []int) {
	for _, line := range lines[l0:l1] {
		if line == nil {
			continue // a form feed: nothing of its own
		}
		for j, c := range line {
			w.WriteString(c)
			if j < len(widths) {
				for n := widths[j] - utf8.RuneCountInString(c); n > 0; n-- {
					w.WriteByte(' ')
				}
			}
		}
		w.WriteByte('\n')
	}
}

// humanDuration renders 2h13m, 5m3s, 12s.
func humanDuration(d time.Duration) string { return string(appendDuration(nil, d)) }

// appendDuration appends humanDuration's form of d (strconv, not
// fmt.Sprintf: vm list formats one per VM).
func appendDuration(b []byte, d time.Duration) []byte {
	if d < 0 {
		d = -d
	}
	two := func(n1 int64, u1 string, n2 int64, u2 string) []byte {
		b = strconv.AppendInt(b, n1, 10)
		b = append(b, u1...)
		if u2 != "" {
			b = strconv.AppendInt(b, n2, 10)
			b = append(b, u2...)
		}
		return b
	}
	switch {
	case d < time.Second:
		return two(d.Milliseconds(), "ms", 0, "")
	case d < time.Minute:
		return two(int64(d/time.Second), "s", 0, "")
	case d < time.Hour:
		return two(int64(d/time.Minute), "m", int64(d/time.Second)%60, "s")
	case d < 48*time.Hour:
		return two(int64(d/time.Hour), "h", int64(d/time.Minute)%60, "m")
	default:
		return two(int64(d/time.Hour)/24, "d", int64(d/time.Hour)%24, "h")
	}
}

// ago renders a relative time: "3m ago", "-" for zero.
func ago(t time.Time, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	b := make([]byte, 0, 16)
	return string(append(appendDuration(b, now.Sub(t)), " ago"...))
}
