package agent

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func cpClient(t *testing.T, opts Options) *CopyClient {
	dial := execServer(t, opts)
	return NewCopyClient(func(context.Context) (net.Conn, error) { return dial(), nil })
}

// countingReader counts what the transport read of a PUT body.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func TestCopyOutAndIn(t *testing.T) {
	c := cpClient(t, Options{})
	ctx := context.Background()
	tmp := t.TempDir()
	src := filepath.Join(tmp, "src")
	os.MkdirAll(filepath.Join(src, "d"), 0o755)
	os.WriteFile(filepath.Join(src, "d", "f"), []byte("hello"), 0o600)
	os.Symlink("d/f", filepath.Join(src, "l"))

	out, err := c.Out(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	var archive bytes.Buffer
	if _, err := io.Copy(&archive, out); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	tr := tar.NewReader(bytes.NewReader(archive.Bytes()))
	var names []string
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		names = append(names, h.Name)
	}
	if strings.Join(names, " ") != "src/ src/d/ src/d/f src/l" {
		t.Errorf("archive entries %q", names)
	}

	dst := filepath.Join(tmp, "dst")
	os.Mkdir(dst, 0o755)
	n, err := c.In(ctx, CopyIn{Path: dst, Name: "src", Dir: true}, bytes.NewReader(archive.Bytes()))
	if err != nil || n != 5 {
		t.Fatalf("In: %d bytes, %v; want 5", n, err)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "src", "l")); err != nil || string(b) != "hello" {
		t.Errorf("copied tree: %q %v", b, err)
	}
	// raw: the archive as it is, into an existing directory.
	raw := filepath.Join(tmp, "raw")
	os.Mkdir(raw, 0o755)
	if _, err := c.In(ctx, CopyIn{Path: raw, Raw: true}, bytes.NewReader(archive.Bytes())); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(raw, "src", "d", "f")); err != nil {
		t.Errorf("raw copy: %v", err)
	}
}

func TestCopyRefusals(t *testing.T) {
	c := cpClient(t, Options{})
	ctx := context.Background()
	tmp := t.TempDir()
	file := filepath.Join(tmp, "file")
	os.WriteFile(file, []byte("x"), 0o644)

	if _, err := c.Out(ctx, filepath.Join(tmp, "nope")); !isCopyError(err, 404, "no such file or directory in the guest") {
		t.Errorf("Out of a missing path: %v", err)
	}
	if _, err := c.Out(ctx, "relative"); !isCopyError(err, 400, "absolute guest path") {
		t.Errorf("Out of a relative path: %v", err)
	}
	if _, err := c.Out(ctx, file+"/"); !isCopyError(err, 400, "is not a directory") {
		t.Errorf("Out of file/: %v", err)
	}
	// Destination refusals come before the body is sent.
	for _, tt := range []struct {
		in   CopyIn
		code int
		want string
	}{
		{CopyIn{Path: filepath.Join(tmp, "no", "such"), Name: "f"}, 400, "its parent"},
		{CopyIn{Path: file, Name: "d", Dir: true}, 400, "cannot copy a directory onto the file"},
		{CopyIn{Path: file, Raw: true}, 400, "is not a directory"},
		{CopyIn{Path: filepath.Join(tmp, "nope"), Raw: true}, 404, "no such file"},
		{CopyIn{Path: tmp, Name: "../x"}, 400, "source's name"},
	} {
		body := &countingReader{r: bytes.NewReader(make([]byte, 1<<20))}
		_, err := c.In(ctx, tt.in, body)
		if !isCopyError(err, tt.code, tt.want) {
			t.Errorf("In %+v: %v, want %d %q", tt.in, err, tt.code, tt.want)
		}
		if body.n != 0 {
			t.Errorf("In %+v: %d body bytes were sent before the refusal", tt.in, body.n)
		}
	}
	// A hostile archive is refused and nothing lands outside.
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	tw.WriteHeader(&tar.Header{Name: "../escaped", Typeflag: tar.TypeReg, Mode: 0o644})
	tw.Close()
	dst := filepath.Join(tmp, "dst")
	os.Mkdir(dst, 0o755)
	if _, err := c.In(ctx, CopyIn{Path: dst, Raw: true}, &b); !isCopyError(err, 409, "leaves the destination") {
		t.Errorf("hostile archive: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(tmp, "escaped")); err == nil {
		t.Error("the hostile entry was written outside")
	}
}

func TestCopyLegacyAgent(t *testing.T) {
	c := cpClient(t, Options{Legacy: true})
	if _, err := c.Out(context.Background(), "/"); !errors.Is(err, ErrCopyUnsupported) {
		t.Errorf("legacy Out: %v, want ErrCopyUnsupported", err)
	}
	if _, err := c.In(context.Background(), CopyIn{Path: "/tmp", Raw: true}, strings.NewReader("")); !errors.Is(err, ErrCopyUnsupported) {
		t.Errorf("legacy In: %v, want ErrCopyUnsupported", err)
	}
}

func isCopyError(err error, status int, substr string) bool {
	var ce *CopyError
	return errors.As(err, &ce) && ce.Status == status && strings.Contains(ce.Msg, substr)
}

// TestCopyOutFailureTrailer: a failure after the stream started (a procfs
// file whose size lies) reaches the client as the trailer, from Close.
func TestCopyOutFailureTrailer(t *testing.T) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("needs procfs")
	}
	c := cpClient(t, Options{})
	out, err := c.Out(context.Background(), "/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, out)
	if err := out.Close(); !isCopyError(err, 500, "archiving /proc/self/status in the guest") {
		t.Fatalf("Close: %v, want the archiving failure", err)
	}
}
