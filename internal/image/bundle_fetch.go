package image

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// ChecksumError is a fetched artifact whose sha256 is not the expected one.
type ChecksumError struct {
	Artifact string
	Source   string
	Expected string
	Actual   string
}

func (e *ChecksumError) Error() string {
	return fmt.Sprintf("checksum mismatch for %s (%s): expected sha256 %s, got %s; nothing was installed", e.Artifact, e.Source, e.Expected, e.Actual)
}

// FetchError is an artifact that could not be fetched at all: an
// unreachable or refusing server, a failed name lookup, an HTTP error, or a
// local file that cannot be read. Its message is one line naming the
// artifact and, for a remote one, the offline route.
type FetchError struct {
	Artifact string
	Source   string
	Remote   bool
	Manifest string // the manifest that names it, when known
	Err      error
}

func (e *FetchError) Error() string {
	if !e.Remote {
		return fmt.Sprintf("cannot fetch %s from %s: %v; fix path = (or url = \"file://...\") under [%s] in the manifest", e.Artifact, e.Source, e.Err, e.Artifact)
	}
	m := "the manifest"
	if e.Manifest != "" {
		m = e.Manifest
	}
	msg := fmt.Sprintf("cannot fetch %s from %s: %v; offline? download it on another machine and install from a copy of %s whose [%s] says path = \"FILE\" (or url = \"file:///FILE\"), same sha256: banger runtime install --manifest COPY",
		e.Artifact, e.Source, e.Err, m, e.Artifact)
	if e.Artifact == ArtifactKernel {
		msg += " (`make kernel` in the checkout builds a kernel to name there)"
	}
	return msg
}

func (e *FetchError) Unwrap() error { return e.Err }

// Fetcher gets artifacts from https URLs and local paths.
type Fetcher struct {
	// Client does the https requests; nil means a client with connect and
	// response-header timeouts (so a firewall that drops packets fails in
	// seconds, not minutes) that honours HTTPS_PROXY.
	// Tests inject the client of an httptest TLS server on loopback.
	Client *http.Client
}

// Timeouts of the default client.
const (
	fetchDialTimeout   = 20 * time.Second
	fetchHeaderTimeout = 60 * time.Second
)

func defaultClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: fetchDialTimeout, KeepAlive: 30 * time.Second}).DialContext
	t.TLSHandshakeTimeout = fetchDialTimeout
	t.ResponseHeaderTimeout = fetchHeaderTimeout
	return &http.Client{Transport: t}
}

// Fetch copies the artifact named name (a manifest table) to dst and checks
// it against want (64 hex digits). Relative paths and file:// URLs resolve
// against dir. An artifact that cannot be fetched at all is a *FetchError;
// one whose sum differs is a *ChecksumError.
func (f Fetcher) Fetch(ctx context.Context, name string, a Artifact, dir, want, dst string) error {
	src := a.Source()
	_, local := localPath(src, dir)
	r, err := f.open(ctx, src, dir)
	if err != nil {
		return &FetchError{Artifact: name, Source: src, Remote: !local, Err: err}
	}
	defer r.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("fetching %s: %w", name, err)
	}
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(out, h), r)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return &FetchError{Artifact: name, Source: src, Remote: !local, Err: fmt.Errorf("download broke off: %w", err)}
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return &ChecksumError{Artifact: name, Source: src, Expected: want, Actual: got}
	}
	return nil
}

func (f Fetcher) open(ctx context.Context, src, dir string) (io.ReadCloser, error) {
	if p, ok := localPath(src, dir); ok {
		fh, err := os.Open(p)
		if err != nil {
			var pe *os.PathError
			if errors.As(err, &pe) {
				err = fmt.Errorf("%s: %w", p, pe.Err)
			}
			return nil, err
		}
		return fh, nil
	}
	if !strings.HasPrefix(src, "https://") {
		return nil, fmt.Errorf("only https:// URLs and local paths are supported")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
	if err != nil {
		return nil, err
	}
	cl := f.Client
	if cl == nil {
		cl = defaultClient()
	}
	resp, err := cl.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("unreachable (%v)", err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("server answered %s", resp.Status)
	}
	return resp.Body, nil
}

// tarReader opens a tar or gzip-compressed tar file.
func tarReader(path string) (*tar.Reader, func() error, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	br := bufio.NewReader(f)
	var r io.Reader = br
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		gz, err := gzip.NewReader(br)
		if err != nil {
			f.Close()
			return nil, nil, fmt.Errorf("reading gzip %s: %w", path, err)
		}
		r = gz
	}
	return tar.NewReader(r), f.Close, nil
}

// extractMember writes the regular file member of the archive at archive
// to dst.
func extractMember(archive, member, dst string) error {
	tr, closeFn, err := tarReader(archive)
	if err != nil {
		return err
	}
	defer closeFn()
	want := strings.TrimPrefix(filepath.Clean(member), "./")
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return fmt.Errorf("archive has no member %q", member)
		}
		if err != nil {
			return fmt.Errorf("reading archive: %w", err)
		}
		if strings.TrimPrefix(filepath.Clean(hdr.Name), "./") != want || hdr.Typeflag != tar.TypeReg {
			continue
		}
		return writeFrom(dst, tr, 0o755)
	}
}

// extractTree unpacks regular files, directories and symlinks of the
// archive under dst, refusing entries that would land outside it.
func extractTree(archive, dst string) error {
	tr, closeFn, err := tarReader(archive)
	if err != nil {
		return err
	}
	defer closeFn()
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading archive: %w", err)
		}
		rel := filepath.Clean(strings.TrimPrefix(hdr.Name, "/"))
		if rel == "." {
			continue
		}
		if rel == ".." || strings.HasPrefix(rel, "../") {
			return fmt.Errorf("archive entry %q points outside the tree", hdr.Name)
		}
		p := filepath.Join(dst, rel)
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			if err := writeFrom(p, tr, os.FileMode(hdr.Mode)&0o755|0o644); err != nil {
				return err
			}
		case tar.TypeSymlink:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			if err := os.Symlink(hdr.Linkname, p); err != nil {
				return err
			}
		}
	}
}

func writeFrom(dst string, r io.Reader, mode os.FileMode) error {
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, r)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(dst, mode)
	}
	return err
}

// copyFile copies src to dst with mode.
func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return writeFrom(dst, in, mode)
}
