package beneath

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const otherUID = 4242 // a uid that owns nothing on the test machine

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: hands files to another uid with fchown")
	}
}

func me() Owner { return Owner{UID: os.Geteuid(), GID: os.Getegid()} }

func mustWrite(t *testing.T, p, body string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(body), mode); err != nil {
		t.Fatal(err)
	}
}

func wantRefused(t *testing.T, what string, err error, reason string) {
	t.Helper()
	if !errors.Is(err, ErrRefused) {
		t.Fatalf("%s: %v, want a refusal", what, err)
	}
	if !strings.Contains(err.Error(), reason) {
		t.Fatalf("%s: %q does not say %q", what, err, reason)
	}
}

func TestOpenRootRefusesSymlinksAnywhere(t *testing.T) {
	base := t.TempDir()
	real := filepath.Join(base, "real", "state")
	if err := os.MkdirAll(real, 0o700); err != nil {
		t.Fatal(err)
	}
	os.Symlink(filepath.Join(base, "real"), filepath.Join(base, "home"))
	os.Symlink(real, filepath.Join(base, "real", "link"))
	d, err := OpenRoot(real, me())
	if err != nil {
		t.Fatal(err)
	}
	if d.Path() != real {
		t.Errorf("path %q", d.Path())
	}
	d.Close()
	for name, p := range map[string]string{
		"symlink above the root": filepath.Join(base, "home", "state"),
		"the root a symlink":     filepath.Join(base, "real", "link"),
	} {
		_, err := OpenRoot(p, me())
		wantRefused(t, name, err, "symlink")
	}
	_, err = OpenRoot("relative/dir", me())
	wantRefused(t, "relative", err, "absolute")
	_, err = OpenRoot(real+"/../state", me())
	wantRefused(t, "dotdot", err, `".."`)
	_, err = OpenRoot("/", me())
	wantRefused(t, "slash", err, "cannot be")
	mustWrite(t, filepath.Join(base, "file"), "x", 0o600)
	_, err = OpenRoot(filepath.Join(base, "file"), me())
	wantRefused(t, "a file", err, "not a directory")
	if _, err := OpenRoot(filepath.Join(base, "missing"), me()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing root: %v, want not-exist", err)
	}
}

func TestOpenRootRefusesAnotherOwner(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	_, err := OpenRoot(dir, Owner{UID: otherUID, GID: otherUID})
	wantRefused(t, "root-owned dir for another uid", err, "owned by uid 0, not 4242")
}

func TestEnsureRootCreatesOnlyUnderTheUsersOwnDirectory(t *testing.T) {
	needRoot(t)
	home := filepath.Join(t.TempDir(), "home")
	if err := os.Mkdir(home, 0o755); err != nil {
		t.Fatal(err)
	}
	o := Owner{UID: otherUID, GID: otherUID}
	root := filepath.Join(home, ".local", "state", "banger")
	_, err := EnsureRoot(root, o)
	wantRefused(t, "home owned by root", err, "create it yourself")
	if _, err := os.Lstat(filepath.Join(home, ".local")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("refused EnsureRoot still created something")
	}
	os.Chown(home, otherUID, otherUID)
	d, err := EnsureRoot(root, o)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	for _, p := range []string{".local", ".local/state", ".local/state/banger"} {
		fi, err := os.Lstat(filepath.Join(home, p))
		if err != nil {
			t.Fatal(err)
		}
		if owner(t, filepath.Join(home, p)) != otherUID || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: owner %d mode %v, want %d 0700", p, owner(t, filepath.Join(home, p)), fi.Mode().Perm(), otherUID)
		}
	}
}

func owner(t *testing.T, p string) int {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return int(st.Uid)
}

func TestOpenChecksTheFile(t *testing.T) {
	needRoot(t)
	base := t.TempDir()
	root := filepath.Join(base, "root")
	outside := filepath.Join(base, "outside")
	o := Owner{UID: otherUID, GID: otherUID}
	mustWrite(t, filepath.Join(outside, "secret"), "secret", 0o600)
	mustWrite(t, filepath.Join(root, "d", "ok"), "ok", 0o600)
	mustWrite(t, filepath.Join(root, "rootowned"), "r", 0o600)
	os.Link(filepath.Join(outside, "secret"), filepath.Join(root, "hard"))
	os.Symlink(filepath.Join(outside, "secret"), filepath.Join(root, "sym"))
	os.Symlink(outside, filepath.Join(root, "dlink"))
	unix.Mkfifo(filepath.Join(root, "fifo"), 0o600)
	unix.Mknod(filepath.Join(root, "null"), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3)))
	os.Mkdir(filepath.Join(root, "sub"), 0o700)
	for _, p := range []string{"", "d", "d/ok", "fifo", "null", "sub", "sym", "dlink"} {
		os.Lchown(filepath.Join(root, p), otherUID, otherUID)
	}
	d, err := OpenRoot(root, o)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	f, err := d.Open("d/ok", unix.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 2)
	if _, err := f.ReadAt(b, 0); err != nil || string(b) != "ok" {
		t.Errorf("read %q %v", b, err)
	}
	f.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for rel, reason := range map[string]string{
			"hard":         "links",
			"rootowned":    "owned by uid 0",
			"sym":          "symlink",
			"dlink/secret": "symlink",
			"fifo":         "FIFO",
			"null":         "device node",
			"sub":          "directory",
			"../outside":   `".."`,
			"/etc/passwd":  "relative",
			"d//ok":        `""`,
		} {
			_, err := d.Open(rel, unix.O_RDONLY)
			wantRefused(t, rel, err, reason)
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Open blocked (a FIFO opened for real?)")
	}
	if _, err := d.Open("missing", unix.O_RDONLY); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing: %v", err)
	}
}

func TestCreateAndDiscard(t *testing.T) {
	needRoot(t)
	base := t.TempDir()
	root := filepath.Join(base, "root")
	outside := filepath.Join(base, "outside")
	os.MkdirAll(filepath.Join(root, "d"), 0o700)
	os.MkdirAll(outside, 0o755)
	os.Symlink(filepath.Join(outside, "new"), filepath.Join(root, "d", "dangling"))
	mustWrite(t, filepath.Join(root, "d", "exists"), "x", 0o600)
	os.MkdirAll(filepath.Join(root, "foreign"), 0o755)
	for _, p := range []string{"", "d", "d/exists"} {
		os.Lchown(filepath.Join(root, p), otherUID, otherUID)
	}
	d, err := OpenRoot(root, Owner{UID: otherUID, GID: 77})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	n, err := d.Create("d/new", 0o640)
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	unix.Fstat(int(n.Fd()), &st)
	if st.Uid != otherUID || st.Gid != 77 || st.Mode&0o7777 != 0o640 {
		t.Errorf("created %d:%d %04o", st.Uid, st.Gid, st.Mode&0o7777)
	}
	if err := n.Discard(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(root, "d", "new")); !errors.Is(err, fs.ErrNotExist) {
		t.Error("Discard left the file")
	}
	if _, err := d.Create("d/exists", 0o600); !errors.Is(err, fs.ErrExist) {
		t.Errorf("existing: %v", err)
	}
	_, err = d.Create("d/dangling", 0o600)
	if err == nil {
		t.Error("created through a dangling symlink")
	}
	if _, err := os.Lstat(filepath.Join(outside, "new")); err == nil {
		t.Error("file created outside")
	}
	_, err = d.Create("foreign/x", 0o600)
	wantRefused(t, "in a directory of another owner", err, "owned by uid 0")
	// Discard leaves a name the user swapped for their own file.
	n, err = d.Create("d/swapped", 0o600)
	if err != nil {
		t.Fatal(err)
	}
	os.Rename(filepath.Join(root, "d", "exists"), filepath.Join(root, "d", "swapped"))
	n.Discard()
	if b, _ := os.ReadFile(filepath.Join(root, "d", "swapped")); string(b) != "x" {
		t.Error("Discard removed the swapped-in file")
	}
}

func TestMkdirAll(t *testing.T) {
	needRoot(t)
	base := t.TempDir()
	root := filepath.Join(base, "root")
	outside := filepath.Join(base, "outside")
	os.MkdirAll(root, 0o755)
	os.MkdirAll(filepath.Join(outside, "vms"), 0o755)
	os.MkdirAll(filepath.Join(root, "foreign"), 0o755)
	os.Symlink(outside, filepath.Join(root, "link"))
	os.Chown(root, otherUID, otherUID)
	os.Lchown(filepath.Join(root, "link"), otherUID, otherUID)
	d, err := OpenRoot(root, Owner{UID: otherUID, GID: otherUID})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	sub, err := d.MkdirAll("a/b/c", 0o750)
	if err != nil {
		t.Fatal(err)
	}
	sub.Close()
	for p, mode := range map[string]os.FileMode{"a": 0o700, "a/b": 0o700, "a/b/c": 0o750} {
		fi, _ := os.Lstat(filepath.Join(root, p))
		if owner(t, filepath.Join(root, p)) != otherUID || fi.Mode().Perm() != mode {
			t.Errorf("%s: %v", p, fi.Mode())
		}
	}
	if sub, err = d.MkdirAll("a/b/c", 0o700); err != nil {
		t.Fatal(err)
	}
	sub.Close()
	_, err = d.MkdirAll("link/vms", 0o700)
	wantRefused(t, "through a symlink", err, "symlink")
	_, err = d.MkdirAll("foreign/x", 0o700)
	wantRefused(t, "under a root-owned dir", err, "owned by uid 0")
	if fi, _ := os.Stat(filepath.Join(outside, "vms")); fi.Mode().Perm() != 0o755 || owner(t, filepath.Join(outside, "vms")) != 0 {
		t.Errorf("outside dir changed: %v", fi.Mode())
	}
	if _, err := os.Lstat(filepath.Join(root, "foreign", "x")); err == nil {
		t.Error("created under a foreign dir")
	}
}

func TestEntriesAndRel(t *testing.T) {
	root := t.TempDir()
	mustWrite(t, filepath.Join(root, "b"), "", 0o600)
	os.Mkdir(filepath.Join(root, "a"), 0o700)
	os.Symlink("/etc", filepath.Join(root, "c"))
	d, err := OpenRoot(root, me())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	es, err := d.Entries()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range es {
		got = append(got, e.Name+":"+map[uint32]string{unix.S_IFDIR: "d", unix.S_IFREG: "f", unix.S_IFLNK: "l"}[e.Type()])
	}
	if strings.Join(got, " ") != "a:d b:f c:l" {
		t.Errorf("entries %v", got)
	}
	if r, err := d.Rel(root + "/x/y"); err != nil || r != "x/y" {
		t.Errorf("Rel = %q %v", r, err)
	}
	for _, p := range []string{root, root + "/../x", "/etc/passwd", "x", root + "x/y"} {
		if _, err := d.Rel(p); !errors.Is(err, ErrRefused) {
			t.Errorf("Rel(%q) = %v", p, err)
		}
	}
	if !Within(root, root+"/a") || Within(root, root) || Within(root, root+"/../a") || Within(root, "/etc") {
		t.Error("Within")
	}
}
