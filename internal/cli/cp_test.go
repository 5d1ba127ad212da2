//go:build !banger_front

package cli

import (
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseCpSide(t *testing.T) {
	for in, want := range map[string]cpSide{
		"dev:/root/x": {vm: "dev", path: "/root/x"},
		"dev:notes":   {vm: "dev", path: "notes"},
		"dev:":        {vm: "dev"},
		"-":           {stdio: true},
		"./a:b":       {path: "./a:b"},
		"/x:y":        {path: "/x:y"},
		"dir/a:b":     {path: "dir/a:b"},
		".hidden:x":   {path: ".hidden:x"},
		":x":          {path: ":x"},
		"plain":       {path: "plain"},
	} {
		if got := parseCpSide(in); got != want {
			t.Errorf("parseCpSide(%q) = %+v, want %+v", in, got, want)
		}
	}
}

func TestGuestPath(t *testing.T) {
	for in, want := range map[string]string{
		"/etc/hosts": "/etc/hosts",
		"notes.txt":  "/root/notes.txt",
		"src/":       "/root/src/",
		"src/.":      "/root/src/.",
		".":          "/root/.",
	} {
		if got := guestPath(in); got != want {
			t.Errorf("guestPath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLocalPathCompletions(t *testing.T) {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "src"), 0o755)
	os.WriteFile(filepath.Join(dir, "script.sh"), nil, 0o644)
	os.WriteFile(filepath.Join(dir, ".secret"), nil, 0o644)
	os.WriteFile(filepath.Join(dir, "other"), nil, 0o644)
	got := localPathCompletions(dir + "/s")
	slices.Sort(got)
	if want := []string{dir + "/script.sh", dir + "/src/"}; !slices.Equal(got, want) {
		t.Errorf("completions %q, want %q", got, want)
	}
	if got := localPathCompletions(dir + "/."); !slices.Equal(got, []string{dir + "/.secret"}) {
		t.Errorf("dot completions %q", got)
	}
}

func TestSizeText(t *testing.T) {
	for in, want := range map[float64]string{0: "0 B", 1023: "1023 B", 1536: "1.5 KiB", 200 << 20: "200.0 MiB", 3 << 30: "3.0 GiB"} {
		if got := sizeText(in); got != want {
			t.Errorf("sizeText(%v) = %q, want %q", in, got, want)
		}
	}
}

func TestCopyProgress(t *testing.T) {
	var b strings.Builder
	p := &copyProgress{w: &b, on: true, start: time.Now(), stop: make(chan struct{})}
	io.Copy(io.Discard, p.reader(strings.NewReader(strings.Repeat("x", progressMin-1))))
	p.draw()
	if b.Len() != 0 {
		t.Errorf("progress under %d bytes: %q", progressMin, b.String())
	}
	io.Copy(io.Discard, p.reader(strings.NewReader("xx")))
	p.finish()
	if out := b.String(); !strings.HasPrefix(out, "\r\033[K4.0 MiB copied, ") || !strings.HasSuffix(out, "/s\n") {
		t.Errorf("progress line %q", out)
	}
}
