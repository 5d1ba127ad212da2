package firecracker

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
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
