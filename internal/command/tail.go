package command

import (
	"bytes"
	"strings"
)

// maxTailLine bounds one kept line: a longer line keeps its last bytes.
const maxTailLine = 64 << 10

// lineTail is a writer that keeps the last max lines written to it, split
// as bufio.ScanLines splits them (a trailing \r dropped, a last line without
// a newline kept). Run hands it to os/exec as both stdout and stderr, which
// then writes from one goroutine.
type lineTail struct {
	max     int
	lines   []string
	partial []byte
}

func (t *lineTail) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			t.add(p)
			break
		}
		t.add(p[:i])
		t.push(string(bytes.TrimSuffix(t.partial, []byte{'\r'})))
		t.partial = t.partial[:0]
		p = p[i+1:]
	}
	return n, nil
}

func (t *lineTail) add(p []byte) {
	t.partial = append(t.partial, p...)
	if over := len(t.partial) - maxTailLine; over > 0 {
		t.partial = append(t.partial[:0], t.partial[over:]...)
	}
}

func (t *lineTail) push(line string) {
	t.lines = append(t.lines, line)
	if len(t.lines) > 2*t.max {
		t.lines = append(t.lines[:0], t.lines[len(t.lines)-t.max:]...)
	}
}

// String is the kept lines joined by newlines.
func (t *lineTail) String() string {
	lines := t.lines
	if len(t.partial) > 0 {
		lines = append(lines[:len(lines):len(lines)], string(bytes.TrimSuffix(t.partial, []byte{'\r'})))
	}
	if len(lines) > t.max {
		lines = lines[len(lines)-t.max:]
	}
	return strings.Join(lines, "\n")
}
