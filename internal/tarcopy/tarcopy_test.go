package tarcopy

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// makeTree builds a tree with the metadata cp keeps.
func makeTree(t *testing.T, dir string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(dir, "sub", "private"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "run.sh"), []byte("#!/bin/sh\necho hi\n"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "secret"), []byte("s3cret"), 0o600))
	must(os.WriteFile(filepath.Join(dir, "sub", "ro.txt"), []byte("read only"), 0o444))
	must(os.WriteFile(filepath.Join(dir, "sub", "private", "x"), bytes.Repeat([]byte{0, 1, 2, 255}, 100000), 0o644))
	must(os.Link(filepath.Join(dir, "secret"), filepath.Join(dir, "sub", "hard")))
	must(os.Symlink("../run.sh", filepath.Join(dir, "sub", "rel")))
	must(os.Symlink("nowhere/at/all", filepath.Join(dir, "dangling")))
	old := time.Date(2001, 2, 3, 4, 5, 6, 789000000, time.UTC)
	must(os.Chtimes(filepath.Join(dir, "sub", "ro.txt"), old, old))
	must(os.Chmod(filepath.Join(dir, "sub", "private"), 0o700))
	must(os.Chtimes(filepath.Join(dir, "sub"), old, old))
}

// snapshot describes a tree: per relative path, type+mode, size, mtime,
// link target and content.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		desc := fi.Mode().String()
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			desc += " -> " + l + " " + fi.ModTime().UTC().Format(time.RFC3339Nano)
		case fi.Mode().IsRegular():
			b, _ := os.ReadFile(p)
			desc += " " + string(b) + " " + fi.ModTime().UTC().Format(time.RFC3339Nano)
		case rel != ".":
			desc += " " + fi.ModTime().UTC().Format(time.RFC3339Nano)
		}
		out[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func archive(t *testing.T, src string) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := Write(context.Background(), &b, src); err != nil {
		t.Fatalf("Write %s: %v", src, err)
	}
	return b.Bytes()
}

func copyTo(t *testing.T, src, dst string) error {
	t.Helper()
	data := archive(t, src)
	fi, _ := os.Lstat(src)
	tg, err := Resolve(dst, SourceName(src), fi.IsDir())
	if err != nil {
		return err
	}
	_, err = Extract(bytes.NewReader(data), tg, Options{Owners: os.Geteuid() == 0})
	return err
}

func TestRoundTripTree(t *testing.T) {
	tmp := t.TempDir()
	src := filepath.Join(tmp, "tree")
	makeTree(t, src)
	want := snapshot(t, src)

	// Onto a missing path: the tree takes its name.
	if err := copyTo(t, src, filepath.Join(tmp, "copy")); err != nil {
		t.Fatal(err)
	}
	if got := snapshot(t, filepath.Join(tmp, "copy")); !equalMaps(got, want) {
		t.Fatalf("copy differs:\n got %v\nwant %v", got, want)
	}
	a, _ := os.Stat(filepath.Join(tmp, "copy", "secret"))
	b, _ := os.Stat(filepath.Join(tmp, "copy", "sub", "hard"))
	if !os.SameFile(a, b) {
		t.Error("the hard link was not kept as one")
	}
	// Into an existing directory: the tree goes inside.
	into := filepath.Join(tmp, "into")
	os.Mkdir(into, 0o755)
	if err := copyTo(t, src, into+"/"); err != nil {
		t.Fatal(err)
	}
	if got := snapshot(t, filepath.Join(into, "tree")); !equalMaps(got, want) {
		t.Fatalf("copy into dir differs:\n got %v\nwant %v", got, want)
	}
	// "dir/." onto an existing directory: its contents.
	cont := filepath.Join(tmp, "contents")
	os.Mkdir(cont, 0o755)
	if err := copyTo(t, src+"/.", cont); err != nil {
		t.Fatal(err)
	}
	if got := snapshot(t, cont); !equalMaps(got, want) {
		t.Fatalf("contents copy differs:\n got %v\nwant %v", got, want)
	}
	// "dir/." onto a missing path: as the directory itself.
	if err := copyTo(t, src+"/.", filepath.Join(tmp, "fresh")); err != nil {
		t.Fatal(err)
	}
	if got := snapshot(t, filepath.Join(tmp, "fresh")); !equalMaps(got, want) {
		t.Fatalf("contents copy to a new dir differs:\n got %v\nwant %v", got, want)
	}
	if os.Geteuid() == 0 {
		if err := os.Lchown(filepath.Join(src, "secret"), 1234, 5678); err != nil {
			t.Fatal(err)
		}
		if err := copyTo(t, src, filepath.Join(tmp, "owned")); err != nil {
			t.Fatal(err)
		}
		fi, _ := os.Lstat(filepath.Join(tmp, "owned", "secret"))
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != 1234 || st.Gid != 5678 {
			t.Errorf("owner %d:%d, want 1234:5678", st.Uid, st.Gid)
		}
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestFileSemantics(t *testing.T) {
	tmp := t.TempDir()
	f := filepath.Join(tmp, "notes.txt")
	os.WriteFile(f, []byte("notes"), 0o640)
	dir := filepath.Join(tmp, "d")
	os.Mkdir(dir, 0o755)
	// Onto a directory: inside it.
	if err := copyTo(t, f, dir); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "notes.txt")); string(b) != "notes" {
		t.Errorf("file into dir: %q", b)
	}
	// Onto a missing name whose parent exists: named so.
	if err := copyTo(t, f, filepath.Join(dir, "renamed")); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "renamed")); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("file to new name: %v %v", fi, err)
	}
	// Onto an existing file: replaced. Onto a symlink: the link is
	// replaced, its target untouched.
	other := filepath.Join(tmp, "other")
	os.WriteFile(other, []byte("keep me"), 0o644)
	link := filepath.Join(dir, "link")
	os.Symlink(other, link)
	if err := copyTo(t, f, link); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(other); string(b) != "keep me" {
		t.Errorf("a copy onto a symlink wrote through it: %q", b)
	}
	if fi, _ := os.Lstat(link); !fi.Mode().IsRegular() {
		t.Errorf("the symlink was not replaced: %v", fi.Mode())
	}

	for _, tt := range []struct {
		src, dst, want string
	}{
		{dir, f, "cannot copy a directory onto the file"},
		{f, filepath.Join(tmp, "missing") + "/", "does not exist"},
		{f, filepath.Join(tmp, "no", "such", "x"), "its parent"},
		{f, filepath.Join(dir, "renamed") + "/", "is not a directory"},
	} {
		err := copyTo(t, tt.src, tt.dst)
		var ue *UserError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("copy %s to %s: %v, want a UserError containing %q", tt.src, tt.dst, err, tt.want)
		}
	}
}

// entry is one header of a hand-made (hostile) tar.
type entry struct {
	name, link string
	typ        byte
	body       string
}

func mkTar(t *testing.T, es ...entry) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range es {
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: 0o644, Size: int64(len(e.body)), ModTime: time.Now()}
		if e.typ == tar.TypeDir {
			h.Mode = 0o755
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(e.body))
	}
	tw.Close()
	return b.Bytes()
}

func TestHostileArchives(t *testing.T) {
	for _, tt := range []struct {
		name    string
		entries func(outside string) []entry
	}{
		{"dotdot", func(string) []entry { return []entry{{name: "../x", typ: tar.TypeReg, body: "pwn"}} }},
		{"inner dotdot", func(string) []entry { return []entry{{name: "a/../../x", typ: tar.TypeReg, body: "pwn"}} }},
		{"absolute", func(o string) []entry { return []entry{{name: filepath.Join(o, "x"), typ: tar.TypeReg, body: "pwn"}} }},
		{"symlink then file through it", func(o string) []entry {
			return []entry{{name: "l", link: o, typ: tar.TypeSymlink}, {name: "l/x", typ: tar.TypeReg, body: "pwn"}}
		}},
		{"relative symlink then file", func(o string) []entry {
			return []entry{{name: "l", link: "../outside", typ: tar.TypeSymlink}, {name: "l/x", typ: tar.TypeReg, body: "pwn"}}
		}},
		{"symlink then dir through it", func(o string) []entry {
			return []entry{{name: "l", link: o, typ: tar.TypeSymlink}, {name: "l/sub/", typ: tar.TypeDir}}
		}},
		{"symlink then symlink through it", func(o string) []entry {
			return []entry{{name: "l", link: o, typ: tar.TypeSymlink}, {name: "l/x", link: "/etc/passwd", typ: tar.TypeSymlink}}
		}},
		{"hard link outside", func(o string) []entry {
			return []entry{{name: "h", link: "../outside/victim", typ: tar.TypeLink}}
		}},
		{"hard link absolute", func(o string) []entry {
			return []entry{{name: "h", link: filepath.Join(o, "victim"), typ: tar.TypeLink}}
		}},
		{"hard link through symlink", func(o string) []entry {
			return []entry{{name: "l", link: o, typ: tar.TypeSymlink}, {name: "h", link: "l/victim", typ: tar.TypeLink}}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tmp := t.TempDir()
			dst := filepath.Join(tmp, "dst")
			outside := filepath.Join(tmp, "outside")
			os.Mkdir(dst, 0o755)
			os.Mkdir(outside, 0o755)
			victim := filepath.Join(outside, "victim")
			os.WriteFile(victim, []byte("original"), 0o644)
			before := snapshot(t, outside)
			_, err := Extract(bytes.NewReader(mkTar(t, tt.entries(outside)...)), Target{Dir: dst}, Options{})
			var ue *UserError
			if !errors.As(err, &ue) {
				t.Errorf("Extract: %v, want a refusal (UserError)", err)
			}
			if after := snapshot(t, outside); !equalMaps(before, after) {
				t.Errorf("outside changed: %v -> %v", before, after)
			}
			if _, err := os.Lstat(filepath.Join(tmp, "x")); err == nil {
				t.Error("a file was written next to the destination")
			}
			// The victim must not have gained a link from inside.
			fi, _ := os.Stat(victim)
			if fi.Sys().(*syscall.Stat_t).Nlink != 1 {
				t.Error("a hard link to the outside file was made")
			}
		})
	}
}

// TestExistingSymlinkInDestination: a symlink already in the destination
// pointing outside is not followed by an entry through it.
func TestExistingSymlinkInDestination(t *testing.T) {
	tmp := t.TempDir()
	dst := filepath.Join(tmp, "dst")
	outside := filepath.Join(tmp, "outside")
	os.Mkdir(dst, 0o755)
	os.Mkdir(outside, 0o755)
	os.Symlink(outside, filepath.Join(dst, "tree"))
	data := mkTar(t, entry{name: "tree/", typ: tar.TypeDir}, entry{name: "tree/x", typ: tar.TypeReg, body: "pwn"})
	_, err := Extract(bytes.NewReader(data), Target{Dir: dst}, Options{})
	if err == nil {
		t.Error("extracting through an existing symlink was not refused")
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Errorf("written outside: %v", ents)
	}
}

func TestWriteMissingSource(t *testing.T) {
	err := Write(context.Background(), &bytes.Buffer{}, filepath.Join(t.TempDir(), "nope"))
	if !IsNotExist(err) {
		t.Fatalf("Write of a missing path: %v, want not-exist", err)
	}
}

func TestSourceName(t *testing.T) {
	for in, want := range map[string]string{"/root/dir": "dir", "/root/dir/": "dir", "dir/.": ".", ".": ".", "/": ".", "a.txt": "a.txt"} {
		if got := SourceName(in); got != want {
			t.Errorf("SourceName(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestPeekReplays: the first header is read and the whole archive still
// extracts from the replay.
func TestPeekReplays(t *testing.T) {
	tmp := t.TempDir()
	src := filepath.Join(tmp, "tree")
	makeTree(t, src)
	hdr, replay, err := Peek(bytes.NewReader(archive(t, src)))
	if err != nil || TopName(hdr) != "tree" || hdr.Typeflag != tar.TypeDir {
		t.Fatalf("Peek: %v %v", hdr, err)
	}
	tg, err := Resolve(filepath.Join(tmp, "out"), TopName(hdr), true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Extract(replay, tg, Options{}); err != nil {
		t.Fatal(err)
	}
	if got, want := snapshot(t, filepath.Join(tmp, "out")), snapshot(t, src); !equalMaps(got, want) {
		t.Fatalf("after Peek:\n got %v\nwant %v", got, want)
	}
	if hdr, _, _ := Peek(bytes.NewReader(archive(t, src+"/."))); TopName(hdr) != ContentsOnly {
		t.Errorf("TopName of a dir/. archive: %q", TopName(hdr))
	}
	if _, _, err := Peek(bytes.NewReader(mkTar(t))); err == nil {
		t.Error("Peek of an empty archive succeeded")
	}
}

// TestWriteThroughSymlinkDir: "link/." archives the directory the link
// names; "link" archives the link.
func TestWriteThroughSymlinkDir(t *testing.T) {
	tmp := t.TempDir()
	src := filepath.Join(tmp, "tree")
	makeTree(t, src)
	link := filepath.Join(tmp, "link")
	os.Symlink(src, link)
	for in, want := range map[string]byte{link: tar.TypeSymlink, link + "/.": tar.TypeDir, link + "/": tar.TypeDir} {
		hdr, _, err := Peek(bytes.NewReader(archive(t, in)))
		if err != nil || hdr.Typeflag != want {
			t.Errorf("Write(%s): first entry %v, %v; want type %c", in, hdr, err, want)
		}
	}
	if err := copyTo(t, link+"/.", filepath.Join(tmp, "out")); err != nil {
		t.Fatal(err)
	}
	if got, want := snapshot(t, filepath.Join(tmp, "out")), snapshot(t, src); !equalMaps(got, want) {
		t.Errorf("copy of link/. differs:\n got %v\nwant %v", got, want)
	}
}
