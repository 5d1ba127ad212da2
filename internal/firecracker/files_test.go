package firecracker

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func numberedLines(n int) string {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "line %04d\n", i) // 10 bytes each
	}
	return b.String()
}

func TestCapFile(t *testing.T) {
	tests := []struct {
		name     string
		content  string
		max      int64
		wantCap  bool
		wantData string
	}{
		{"under limit", "abc\n", 10, false, "abc\n"},
		{"at limit", "0123456789", 10, false, "0123456789"},
		// 100 lines of 10 bytes, max 200: the last 100 bytes start at a line
		// boundary, so exactly the last 10 lines stay.
		{"lines aligned", numberedLines(100), 200, true, numberedLines(100)[900:]},
		// max 205: the last 102 bytes begin mid-line; the partial line goes.
		{"lines cut", numberedLines(100), 205, true, numberedLines(100)[900:]},
		{"no newline", strings.Repeat("x", 50), 20, true, strings.Repeat("x", 10)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "console.log")
			if err := os.WriteFile(p, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := CapFile(p, tt.max)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.wantCap {
				t.Errorf("CapFile = %v, want %v", got, tt.wantCap)
			}
			data, _ := os.ReadFile(p)
			if string(data) != tt.wantData {
				t.Errorf("content %q, want %q", data, tt.wantData)
			}
			if int64(len(data)) > tt.max {
				t.Errorf("size %d over max %d", len(data), tt.max)
			}
		})
	}
}

// Firecracker's console fd is O_APPEND: after a cap its next writes must
// land at the new end, not at the old offset (which would leave a hole).
func TestCapFileWithAppendingWriter(t *testing.T) {
	p := filepath.Join(t.TempDir(), "console.log")
	w, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.WriteString(numberedLines(1000))
	if capped, err := CapFile(p, 1000); err != nil || !capped {
		t.Fatalf("CapFile = %v, %v", capped, err)
	}
	w.WriteString("after cap\n")
	data, _ := os.ReadFile(p)
	if bytes.IndexByte(data, 0) >= 0 {
		t.Error("file has a hole of NUL bytes")
	}
	want := numberedLines(1000)[10000-500:] + "after cap\n"
	if string(data) != want {
		t.Errorf("content after cap and append:\n%q\nwant\n%q", data, want)
	}
}

func TestCapFileEdgeCases(t *testing.T) {
	if capped, err := CapFile(filepath.Join(t.TempDir(), "missing"), 100); capped || err != nil {
		t.Errorf("missing file: %v, %v; want false, nil", capped, err)
	}
	if _, err := CapFile(filepath.Join(t.TempDir(), "x"), 1); err == nil {
		t.Error("max 1: no error")
	}
}

func TestTailFile(t *testing.T) {
	big := numberedLines(5000) // 50 kB: several read chunks
	tests := []struct {
		name    string
		content string
		n       int
		want    string
	}{
		{"last two", "a\nb\nc\n", 2, "b\nc\n"},
		{"no trailing newline", "a\nb\nc", 2, "b\nc"},
		{"fewer lines than n", "a\nb\n", 20, "a\nb\n"},
		{"exactly n", "a\nb\n", 2, "a\nb\n"},
		{"empty", "", 5, ""},
		{"zero lines", "a\n", 0, ""},
		{"blank lines kept", "a\n\n\nb\n", 3, "\n\nb\n"},
		{"big file", big, 3, "line 4998\nline 4999\nline 5000\n"},
		{"big file many", big, 2000, big[30000:]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "log")
			os.WriteFile(p, []byte(tt.content), 0o600)
			got, err := TailFile(p, tt.n)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("TailFile(%d) = %q, want %q", tt.n, got, tt.want)
			}
		})
	}
	p := filepath.Join(t.TempDir(), "missing.log")
	_, err := TailFile(p, 3)
	if err == nil || !os.IsNotExist(err) && !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing file: %v", err)
	}
}

func TestLogSummary(t *testing.T) {
	dir := t.TempDir()
	fcLog := filepath.Join(dir, "firecracker.log")
	console := filepath.Join(dir, "console.log")
	quiet := filepath.Join(dir, "quiet.log")
	write := func(p, s string) {
		t.Helper()
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(s)
		f.Close()
	}
	write(fcLog, "2025-01-02T03:04:05.000000001 [vm:main] Running Firecracker v1.16.1\n")
	write(console, "[    0.000000] Command line: console=ttyS0 reboot=k panic=1 pci=off\n[    0.3] Run /sbin/init as init process\n")
	write(quiet, "one\ntwo\nthree\nfour\n")
	marks := MarkLogs(fcLog, console, filepath.Join(dir, "missing.log"))
	if marks[2].Offset != 0 || marks[0].Offset == 0 {
		t.Fatalf("marks %+v", marks)
	}
	write(fcLog, "2025-01-02T03:04:06.000000001 [vm:fc_vcpu 0] Failure in vCPU 0: Received KVM_EXIT_INTERNAL_ERROR. Suberror: 1\n"+
		"2025-01-02T03:04:06.100000000 [vm:main] Vmm is stopping.\n"+
		"2025-01-02T03:04:06.200000000 [vm:main] Firecracker exiting with error. exit_code=1\n")
	write(console, "[    1.0] Kernel panic - not syncing: Attempted to kill init!\n")

	// Error lines only, timestamps dropped, the kernel line's panic=1 not
	// taken for a panic, files in the order given, the missing one skipped.
	got := SummarySince(marks)
	want := "; firecracker.log: [vm:fc_vcpu 0] Failure in vCPU 0: Received KVM_EXIT_INTERNAL_ERROR. Suberror: 1 | [vm:main] Firecracker exiting with error. exit_code=1" +
		"; console.log: [    1.0] Kernel panic - not syncing: Attempted to kill init!"
	if got != want {
		t.Errorf("SummarySince:\n got %q\nwant %q", got, want)
	}
	// From the start, the earlier boot's lines count too; a file without
	// error lines gives its last three.
	got = LogSummary(console, quiet)
	want = "; console.log: [    1.0] Kernel panic - not syncing: Attempted to kill init!; quiet.log: two | three | four"
	if got != want {
		t.Errorf("LogSummary:\n got %q\nwant %q", got, want)
	}
	// A file trimmed below its mark (CapFile) is read from its start.
	if err := os.WriteFile(console, []byte("oops: trimmed\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := SummarySince(marks[1:2]); got != "; console.log: oops: trimmed" {
		t.Errorf("after a trim: %q", got)
	}
	if got := SummarySince(MarkLogs(fcLog)); got != "" {
		t.Errorf("nothing new since the mark, got %q", got)
	}
}

func TestErrorLinesBounds(t *testing.T) {
	p := filepath.Join(t.TempDir(), "big.log")
	var b strings.Builder
	b.WriteString(strings.Repeat("x", 70<<10) + " error in a line cut off by the 64 KiB window\n")
	for i := range 8 {
		fmt.Fprintf(&b, "error %d %s\n", i, strings.Repeat("y", 2000))
	}
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	lines := ErrorLines(p, 5)
	if len(lines) != 5 {
		t.Fatalf("%d lines, want 5", len(lines))
	}
	for i, l := range lines {
		if !strings.HasPrefix(l, fmt.Sprintf("error %d ", i+3)) || len(l) > 1024+len("…") || !strings.HasSuffix(l, "…") {
			t.Errorf("line %d: %d bytes, starts %q", i, len(l), l[:min(len(l), 20)])
		}
	}
	if got := ErrorLines(filepath.Join(t.TempDir(), "none"), 5); got != nil {
		t.Errorf("missing file: %q", got)
	}
}
