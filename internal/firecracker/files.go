package firecracker

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"
)

// CapFile keeps the file at path at most max bytes: when it is larger, it
// keeps only its last max/2 bytes (starting at a line boundary when there is
// one), moved to the front of the file and truncated in place. It is meant
// for console.log, which Firecracker writes with O_APPEND, so its next writes
// land at the new end. Bytes written during the few microseconds between the
// final copy and the truncation can be lost. A missing file is not an error.
// It reports whether it trimmed.
func CapFile(path string, max int64) (bool, error) {
	if max < 2 {
		return false, fmt.Errorf("capping %s: limit %d bytes is too small", path, max)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("capping %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return false, fmt.Errorf("capping %s: %w", path, err)
	}
	size := fi.Size()
	if size <= max {
		return false, nil
	}
	from := size - max/2
	// Start at the first line boundary of the kept part, so no line is
	// cut; head begins one byte early to see whether from already is one.
	head := make([]byte, min(max/2+1, 4096))
	n, err := f.ReadAt(head, from-1)
	if err != nil && err != io.EOF {
		return false, fmt.Errorf("capping %s: %w", path, err)
	}
	if i := bytes.IndexByte(head[:n], '\n'); i >= 0 && from+int64(i) < size {
		from += int64(i)
	}
	// Copy forward (destination before source, so it is safe in place),
	// following bytes appended while copying.
	var written int64
	for {
		c, err := io.Copy(io.NewOffsetWriter(f, written), io.NewSectionReader(f, from, size-from))
		if err != nil {
			return false, fmt.Errorf("capping %s: moving tail: %w", path, err)
		}
		written += c
		from += c
		fi, err := f.Stat()
		if err != nil {
			return false, fmt.Errorf("capping %s: %w", path, err)
		}
		if fi.Size() <= size {
			break
		}
		size = fi.Size()
	}
	if err := f.Truncate(written); err != nil {
		return false, fmt.Errorf("capping %s: truncating: %w", path, err)
	}
	return true, nil
}

// TailFile returns the last n lines of the file at path (each with its
// newline, as in the file). A file with fewer lines is returned whole.
func TailFile(path string, n int) (string, error) {
	if n <= 0 {
		return "", nil
	}
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("reading tail of %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("reading tail of %s: %w", path, err)
	}
	const chunk = 8192
	end := fi.Size()
	var buf []byte
	for off := end; off > 0; {
		step := min(int64(chunk), off)
		off -= step
		b := make([]byte, step)
		if _, err := f.ReadAt(b, off); err != nil && err != io.EOF {
			return "", fmt.Errorf("reading tail of %s: %w", path, err)
		}
		buf = append(b, buf...)
		// n lines need n newlines before them (one more if the file ends
		// with a newline) to be complete.
		need := n
		if bytes.HasSuffix(buf, []byte("\n")) {
			need++
		}
		if bytes.Count(buf, []byte("\n")) >= need {
			break
		}
	}
	body := buf
	trail := bytes.HasSuffix(body, []byte("\n"))
	if trail {
		body = body[:len(body)-1]
	}
	lines := bytes.Split(body, []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	out := bytes.Join(lines, []byte("\n"))
	if trail {
		out = append(out, '\n')
	}
	return string(out), nil
}

// Bounds of LogSummary: how much of each file's end is read, how many lines
// of each are quoted and how long each may be.
const (
	summaryReadBytes = 64 << 10
	summaryLines     = 5
	summaryLineBytes = 1024
)

// LogSummary quotes the last error lines of each file (Firecracker's log,
// the serial console) on one line, for an exit reason:
// "; firecracker.log: a | b; console.log: c". Lines that look like errors
// (error, fail, panic, KVM_EXIT, exit, ...) are preferred; a file without
// any contributes its last few lines. Missing or empty files are skipped; at
// most 5 lines of 1 KiB per file are quoted.
func LogSummary(paths ...string) string {
	marks := make([]LogMark, len(paths))
	for i, p := range paths {
		marks[i] = LogMark{Path: p}
	}
	return SummarySince(marks)
}

// LogMark is a position in a log file: where it ended when a process was
// started, so its exit reason quotes only what that process wrote.
type LogMark struct {
	Path   string
	Offset int64
}

// MarkLogs returns the current end of each file (0 for a missing one).
func MarkLogs(paths ...string) []LogMark {
	marks := make([]LogMark, len(paths))
	for i, p := range paths {
		marks[i] = LogMark{Path: p}
		if fi, err := os.Stat(p); err == nil {
			marks[i].Offset = fi.Size()
		}
	}
	return marks
}

// SummarySince is LogSummary over what each file gained after its mark. A
// file now shorter than its mark (trimmed by CapFile) is read from the start.
func SummarySince(marks []LogMark) string {
	var b strings.Builder
	for _, m := range marks {
		if m.Path == "" {
			continue
		}
		lines := errorLines(m.Path, m.Offset, summaryLines)
		if len(lines) == 0 {
			continue
		}
		fmt.Fprintf(&b, "; %s: %s", filepath.Base(m.Path), strings.Join(lines, " | "))
	}
	return b.String()
}

// errorWords mark a line as an error line (matched in lower case, in words
// that are not key=value settings such as a kernel line's panic=1).
var errorWords = []string{"error", "fail", "panic", "fatal", "kvm_exit", "abort", "exit", "oops", "bug:", "segfault", "killed", "refus", "denied", "invalid", "cannot", "unable"}

func looksLikeError(line string) bool {
	for _, word := range strings.Fields(strings.ToLower(line)) {
		if strings.Contains(word, "=") {
			continue
		}
		for _, w := range errorWords {
			if strings.Contains(word, w) {
				return true
			}
		}
	}
	return false
}

// ErrorLines returns up to n lines from the end of the file at path: the
// last lines that look like errors, or, when none does, the last few lines
// (at most 3). Timestamps Firecracker puts first are dropped and each line
// is cut to 1 KiB. A missing file gives none.
func ErrorLines(path string, n int) []string { return errorLines(path, 0, n) }

// errorLines is ErrorLines over the part of the file after from.
func errorLines(path string, from int64, n int) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil
	}
	size := fi.Size()
	if from > size {
		from = 0
	}
	off := max(size-summaryReadBytes, from)
	if size <= off {
		return nil
	}
	buf := make([]byte, size-off)
	m, err := f.ReadAt(buf, off)
	if err != nil && err != io.EOF {
		return nil
	}
	buf = buf[:m]
	if off > from {
		// Drop the partial first line.
		if i := bytes.IndexByte(buf, '\n'); i >= 0 {
			buf = buf[i+1:]
		}
	}
	var all, errs []string
	for _, l := range strings.Split(string(buf), "\n") {
		l = strings.TrimSpace(strings.ToValidUTF8(l, "?"))
		if l == "" {
			continue
		}
		l = cutLine(dropTimestamp(l))
		all = append(all, l)
		if looksLikeError(l) {
			errs = append(errs, l)
		}
	}
	if len(errs) == 0 {
		errs, n = all, min(n, 3)
	}
	if len(errs) > n {
		errs = errs[len(errs)-n:]
	}
	return errs
}

// dropTimestamp removes a leading "2006-01-02T15:04:05.000000000 " that
// Firecracker's logger writes before each line.
func dropTimestamp(l string) string {
	sp := strings.IndexByte(l, ' ')
	if sp < 19 || l[4] != '-' || l[7] != '-' || l[10] != 'T' {
		return l
	}
	for _, c := range l[:4] {
		if c < '0' || c > '9' {
			return l
		}
	}
	return strings.TrimSpace(l[sp+1:])
}

func cutLine(l string) string {
	if len(l) <= summaryLineBytes {
		return l
	}
	cut := summaryLineBytes
	for cut > 0 && !utf8.RuneStart(l[cut]) {
		cut--
	}
	return l[:cut] + "…"
}
