package ext4

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"banger/internal/command"
)

func TestParseLs(t *testing.T) {
	tests := []struct {
		name string
		out  string
		want []Dirent
		bad  bool
	}{
		{"empty", "", nil, false},
		{"plain", "/2/040755/0/0/.//\n/2/040755/0/0/..//\n/12/100644/1000/1001/.bashrc/3/\n\n",
			[]Dirent{{2, 0o40755, 0, 0, "."}, {2, 0o40755, 0, 0, ".."}, {12, 0o100644, 1000, 1001, ".bashrc"}}, false},
		{"newline and spaces in a name", "/2/040755/0/0/.//\n/15/100600/0/0/new\nline x/1/\n",
			[]Dirent{{2, 0o40755, 0, 0, "."}, {15, 0o100600, 0, 0, "new\nline x"}}, false},
		{"free slots skipped", "/11/040700/0/0/.//\n/0/000000/0/0//0/\n", []Dirent{{11, 0o40700, 0, 0, "."}}, false},
		{"large uid", "/13/120777/4000000000/7/l/4/\n", []Dirent{{13, 0o120777, 4000000000, 7, "l"}}, false},
		{"error text", "ls: File not found by ext2_lookup\n", nil, true},
		{"cut short", "/2/040755/0/0/./", nil, true},
		{"bad inode", "/x/040755/0/0/.//\n", nil, true},
		{"junk between records", "/2/040755/0/0/.//junk/3/040755/0/0/a//\n", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseLs([]byte(tt.out))
			if (err != nil) != tt.bad || !slices.Equal(got, tt.want) {
				t.Errorf("parseLs = %+v, %v; want %+v (error %v)", got, err, tt.want, tt.bad)
			}
		})
	}
}

func TestPlanMoves(t *testing.T) {
	ents := func(names ...string) []Dirent {
		var out []Dirent
		for i, n := range names {
			out = append(out, Dirent{Inode: uint64(100 + i), Mode: 0o100644, Name: n})
		}
		return out
	}
	top := ents(".", "..", ".bashrc", ".profile", ".profile.nested", "root", "lost+found")
	inner := ents(".", "..", "root", ".profile", "lost+found", ".bashrc", "notes", ".bashrc.nested")
	plan, err := planMoves(top, inner)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range plan {
		got = append(got, m.from+" -> "+m.to)
	}
	want := []string{
		".bashrc -> .bashrc.nested",
		".bashrc.nested -> .bashrc.nested.nested",
		".profile -> .profile.nested.2",
		"lost+found -> lost+found.nested",
		"notes -> notes",
		"root -> root.nested",
	}
	if !slices.Equal(got, want) {
		t.Errorf("plan:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if _, err := planMoves(top, ents("a\nb")); err == nil || !strings.Contains(err.Error(), "newline") {
		t.Errorf("a name with a newline: %v", err)
	}
	long := strings.Repeat("x", 250)
	if _, err := planMoves(ents(long), ents(long)); err == nil || !strings.Contains(err.Error(), "over 255 bytes") {
		t.Errorf("a clash too long to rename: %v", err)
	}
}

func TestQuote(t *testing.T) {
	if got := quote(`/root/a "b" c`); got != `"/root/a ""b"" c"` {
		t.Errorf("quote = %s", got)
	}
}

func needE2fsprogs(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"mkfs.ext4", "debugfs", "e2fsck"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (install e2fsprogs; CI has it)", tool)
		}
	}
}

// makeDisk builds an ext4 image of size from files (path -> content; a
// path ending in "/" is a directory) with mkfs -d, then applies the
// debugfs script (owners, modes, device nodes, symlinks), so the test needs
// no privilege.
func makeDisk(t *testing.T, files map[string]string, script string, size string) string {
	t.Helper()
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	for p, body := range files {
		full := filepath.Join(tree, p)
		if strings.HasSuffix(p, "/") {
			if err := os.MkdirAll(full, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	disk := filepath.Join(dir, "work.ext4")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-E", "root_owner=0:0", "-d", tree, disk, size).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	if script != "" {
		if _, err := debugfs(context.Background(), disk, true, script); err != nil {
			t.Fatalf("crafting the disk: %v", err)
		}
	}
	return disk
}

func ls(t *testing.T, disk, dir string) map[string]Dirent {
	t.Helper()
	ents, err := List(context.Background(), disk, dir)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]Dirent{}
	for _, d := range ents {
		m[d.Name] = d
	}
	return m
}

func req(t *testing.T, disk, r string) string {
	t.Helper()
	out, err := debugfs(context.Background(), disk, false, r)
	if err != nil {
		t.Fatalf("debugfs %s: %v", r, err)
	}
	return string(out)
}

func sum(t *testing.T, p string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// hostState is what a repair must leave alone on the host: mounts of the
// disk or under the scratch directory, loop devices backed by the disk,
// and the scratch directory's contents. The tests point TMPDIR at a
// directory of their own, so other processes on the host do not count.
type hostState struct {
	mounts, loops string
	tmp           []string
}

func snapshotHost(t *testing.T, disk string) hostState {
	t.Helper()
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var mounts []string
	for _, line := range strings.Split(string(mi), "\n") {
		if strings.Contains(line, filepath.Dir(disk)) || strings.Contains(line, os.TempDir()) {
			mounts = append(mounts, line)
		}
	}
	ents, _ := os.ReadDir(os.TempDir())
	var tmp []string
	for _, e := range ents {
		tmp = append(tmp, e.Name())
	}
	return hostState{mounts: strings.Join(mounts, "\n"), loops: strings.Join(loopsOf(disk), ","), tmp: tmp}
}

// loopsOf lists the loop devices backed by disk.
func loopsOf(disk string) []string {
	var loops []string
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, f := range files {
		if b, err := os.ReadFile(f); err == nil && strings.HasPrefix(strings.TrimSpace(string(b)), disk) {
			loops = append(loops, f)
		}
	}
	return loops
}

func (h hostState) equal(o hostState) bool {
	return h.mounts == o.mounts && h.loops == o.loops && slices.Equal(h.tmp, o.tmp)
}

// repairWatched runs the repair while polling for a loop device on the
// disk: the host kernel cannot mount a plain file without one.
func repairWatched(t *testing.T, disk string) ([]string, error) {
	t.Helper()
	done := make(chan struct{})
	seen := make(chan []string, 1)
	go func() {
		defer close(seen)
		for {
			if l := loopsOf(disk); len(l) > 0 {
				seen <- l
				return
			}
			select {
			case <-done:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	moves, err := RepairNestedHome(context.Background(), disk)
	close(done)
	if l := <-seen; len(l) > 0 {
		t.Errorf("the disk was attached to a loop device during the repair: %v", l)
	}
	return moves, err
}

// TestNoMountInPackage: the package never mounts or attaches anything.
func TestNoMountInPackage(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, bad := range []string{"unix.Mount", "syscall.Mount", `"mount"`, "losetup", "LOOP_", "loop-control", "fuse"} {
			if bytes.Contains(b, []byte(bad)) {
				t.Errorf("%s uses %s: the ext4 package must work on image files in userspace", f, bad)
			}
		}
	}
}

// TestRepairNestedHome flattens a crafted disk: a nested home with name
// clashes, a setuid-root binary, a device node, a symlink pointing out,
// a hard link, a subdirectory tree and enough entries to grow the top
// directory. Nothing on the host changes, nothing is mounted.
func TestRepairNestedHome(t *testing.T) {
	needE2fsprogs(t)
	t.Setenv("TMPDIR", t.TempDir())
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "sentinel"), []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		".bashrc":                "top\n",
		".profile":               "top profile\n",
		".profile.nested":        "older aside\n",
		"root/.bashrc":           "nested\n",
		"root/.profile":          "nested profile\n",
		"root/.ssh/":             "",
		"root/.ssh/authorized":   "key\n",
		"root/tool":              "#!/bin/true\n",
		"root/sub/deeper/f":      "deep\n",
		`root/a "q" b`:           "odd name\n",
		"root/hard1":             "shared\n",
		"root/lost+found/":       "",
		"root/lost+found/stray":  "s\n",
		"root/notes.d/":          "",
		"root/notes.d/plan.todo": "p\n",
	}
	var many []string
	for i := 0; i < 300; i++ {
		name := fmt.Sprintf("many-file-with-a-longish-name-%03d", i)
		files["root/"+name] = "m"
		many = append(many, name)
	}
	script := strings.Join([]string{
		"sif /root mode 040750", "sif /root uid 1234", "sif /root gid 5678",
		"sif /root/tool mode 0104755", "sif /root/tool uid 0", "sif /root/tool gid 0",
		"sif /root/.bashrc uid 1000", "sif /root/.bashrc gid 1001",
		"cd /root", "mknod null c 1 3", "cd /", // mknod takes a name in the cwd, not a path
		"symlink /root/escape " + outside,
		"ln /root/hard1 /root/hard2", "sif /root/hard1 links_count 2",
	}, "\n") + "\n"
	disk := makeDisk(t, files, script, "16M")
	if out, err := exec.Command("e2fsck", "-fn", disk).CombinedOutput(); err != nil {
		t.Fatalf("crafted disk is not clean: %v\n%s", err, out)
	}
	innerBefore := ls(t, disk, "/root")
	before := snapshotHost(t, disk)

	moves, err := repairWatched(t, disk)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"root/.bashrc -> .bashrc.nested",
		"root/.profile -> .profile.nested.2",
		"root/.ssh -> .ssh",
		`root/a "q" b -> a "q" b`,
		"root/escape -> escape",
		"root/hard1 -> hard1",
		"root/hard2 -> hard2",
		"root/lost+found -> lost+found.nested",
	}
	for _, m := range many {
		want = append(want, "root/"+m+" -> "+m)
	}
	want = append(want, "root/notes.d -> notes.d", "root/null -> null", "root/sub -> sub", "root/tool -> tool",
		"removed empty root/ (owner 1234:5678, mode 0750 kept on the disk's root)")
	if !slices.Equal(moves, want) {
		t.Errorf("moves:\n%s\nwant:\n%s", strings.Join(moves, "\n"), strings.Join(want, "\n"))
	}
	if after := snapshotHost(t, disk); !before.equal(after) {
		t.Errorf("the repair changed the host: mounts, loops or scratch files differ\nbefore %+v\nafter %+v", before.tmp, after.tmp)
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 1 {
		t.Errorf("the symlink was followed on the host: %s holds %v", outside, ents)
	}
	if out, err := exec.Command("e2fsck", "-fn", disk).CombinedOutput(); err != nil {
		t.Errorf("repaired disk is not clean: %v\n%s", err, out)
	}

	top := ls(t, disk, "/")
	if _, ok := top["root"]; ok {
		t.Error("root/ still there")
	}
	if d := top["."]; d.Mode != 0o40750 || d.UID != 1234 || d.GID != 5678 {
		t.Errorf("the disk's root is %o %d:%d, want the nested dir's 040750 1234:5678", d.Mode, d.UID, d.GID)
	}
	for _, m := range want[:len(want)-1] {
		from, to, _ := strings.Cut(strings.TrimPrefix(m, "root/"), " -> ")
		b, a := innerBefore[from], top[to]
		if a.Inode != b.Inode || a.Mode != b.Mode || a.UID != b.UID || a.GID != b.GID {
			t.Errorf("%s arrived as %+v, was %+v", to, a, b)
		}
	}
	if d := top["tool"]; d.Mode != 0o104755 || d.UID != 0 {
		t.Errorf("setuid tool = %+v, want 0104755 root (inside the image)", d)
	}
	if d := top["null"]; d.Mode&0o170000 != 0o020000 {
		t.Errorf("null = %+v, want a character device", d)
	}
	for name, body := range map[string]string{".bashrc": "top\n", ".bashrc.nested": "nested\n", ".profile": "top profile\n",
		".profile.nested": "older aside\n", ".profile.nested.2": "nested profile\n", ".ssh/authorized": "key\n",
		"sub/deeper/f": "deep\n", "hard2": "shared\n", "lost+found.nested/stray": "s\n"} {
		if got := req(t, disk, "cat "+quote("/"+name)); got != body {
			t.Errorf("/%s = %q, want %q", name, got, body)
		}
	}
	if s := req(t, disk, "stat /escape"); !strings.Contains(s, outside) {
		t.Errorf("escape is no longer the symlink to %s:\n%s", outside, s)
	}
	if s := req(t, disk, "stat /hard1"); !strings.Contains(s, "Links: 2") {
		t.Errorf("hard1 lost its second link:\n%s", s)
	}
	for _, d := range []string{"/sub", "/.ssh", "/lost+found.nested"} {
		if dd := ls(t, disk, d)[".."]; dd.Inode != 2 {
			t.Errorf("%s/.. is inode %d, want the root (2)", d, dd.Inode)
		}
	}
	if dd := ls(t, disk, "/sub/deeper")[".."]; dd.Inode != top["sub"].Inode {
		t.Errorf("/sub/deeper/.. moved: %d", dd.Inode)
	}

	// A flat disk is left alone, unwritten.
	h := sum(t, disk)
	for i := 0; i < 2; i++ {
		if moves, err := RepairNestedHome(context.Background(), disk); err != nil || len(moves) != 0 {
			t.Errorf("repeat repair: %v %v", moves, err)
		}
	}
	if sum(t, disk) != h {
		t.Error("repeat repair wrote to a flat disk")
	}
}

func TestRepairNestedHomeLeavesOthersAlone(t *testing.T) {
	needE2fsprogs(t)
	tests := []struct {
		name   string
		files  map[string]string
		script string
	}{
		{"no root dir", map[string]string{".bashrc": "x"}, ""},
		{"root without home files", map[string]string{".bashrc": "x", "root/data.txt": "x"}, ""},
		{"root is a file", map[string]string{"root": "x", ".bashrc": "x"}, ""},
		{"root is a symlink to a home", map[string]string{"home/.bashrc": "x"}, "symlink /root /home\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			disk := makeDisk(t, tt.files, tt.script, "8M")
			h := sum(t, disk)
			moves, err := RepairNestedHome(context.Background(), disk)
			if err != nil || len(moves) != 0 {
				t.Fatalf("moves %v, err %v", moves, err)
			}
			if sum(t, disk) != h {
				t.Error("disk changed")
			}
		})
	}
}

// TestRepairNestedHomeRefusals: a damaged or unrepairable disk gives one
// clear error and is not changed.
func TestRepairNestedHomeRefusals(t *testing.T) {
	needE2fsprogs(t)
	t.Setenv("TMPDIR", t.TempDir())
	nested := map[string]string{".bashrc": "top\n", "root/.bashrc": "nested\n", "root/notes": "n\n"}
	corrupt := func(off int64, b []byte) func(t *testing.T, disk string) {
		return func(t *testing.T, disk string) {
			f, err := os.OpenFile(disk, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteAt(b, off); err != nil {
				t.Fatal(err)
			}
		}
	}
	tests := []struct {
		name   string
		script string
		damage func(t *testing.T, disk string)
		want   string
		is     error
	}{
		{"no superblock", "", corrupt(1024+56, []byte{0, 0}), "not an ext4 filesystem", ErrNotExt4},
		{"corrupt superblock (blocks per group 0)", "", corrupt(1024+32, []byte{0, 0, 0, 0}), "superblock is corrupt", nil},
		{"corrupt superblock (inodes per group 0)", "", corrupt(1024+40, []byte{0, 0, 0, 0}), "superblock is corrupt", nil},
		{"immutable top", "sif / flags 0x80010\n", nil, "immutable", nil},
		{"append-only root/", "sif /root flags 0x80020\n", nil, "append-only", nil},
		{"name with a newline", "", nil, "newline", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files := nested
			if tt.want == "newline" {
				files = map[string]string{"root/.bashrc": "nested\n", "root/bad\nname": "x"}
			}
			disk := makeDisk(t, files, tt.script, "8M")
			if tt.damage != nil {
				tt.damage(t, disk)
			}
			h := sum(t, disk)
			before := snapshotHost(t, disk)
			moves, err := repairWatched(t, disk)
			if err == nil || !strings.Contains(err.Error(), tt.want) || (tt.is != nil && !errors.Is(err, tt.is)) {
				t.Fatalf("moves %v, err %v; want an error with %q", moves, err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
			if sum(t, disk) != h {
				t.Error("refused repair changed the disk")
			}
			if after := snapshotHost(t, disk); !before.equal(after) {
				t.Error("refused repair changed the host")
			}
		})
	}
}

func TestBytes(t *testing.T) {
	sb := make([]byte, 2048)
	sb[1024+56], sb[1024+57] = 0x53, 0xEF
	sb[1024+4] = 0x10 // 16 blocks
	sb[1024+24] = 2   // 4 KiB blocks
	if n, err := Bytes(bytes.NewReader(sb)); err != nil || n != 16*4096 {
		t.Errorf("Bytes = %d, %v", n, err)
	}
	if _, err := Bytes(bytes.NewReader(make([]byte, 1500))); !errors.Is(err, ErrNotExt4) {
		t.Errorf("short file: %v", err)
	}
}

// TestRepairNestedHomeHtreeTop: a top directory with an htree index (as
// the guest kernel makes for a big home) takes the moves without a manual
// expansion, and stays valid.
func TestRepairNestedHomeHtreeTop(t *testing.T) {
	needE2fsprogs(t)
	files := map[string]string{"root/.profile": "p\n"}
	for i := 0; i < 600; i++ {
		files[fmt.Sprintf("top-file-with-a-longish-name-%03d", i)] = "t"
	}
	for i := 0; i < 300; i++ {
		files[fmt.Sprintf("root/nested-file-with-a-longish-name-%03d", i)] = "n"
	}
	disk := makeDisk(t, files, "", "16M")
	if out, err := exec.Command("e2fsck", "-fyD", disk).CombinedOutput(); command.ExitCode(err) > 1 {
		t.Fatalf("indexing the directories: %v\n%s", err, out)
	}
	if fl, err := inodeFlags(context.Background(), disk, "/"); err != nil || fl&flagIndex == 0 {
		t.Fatalf("top directory flags 0x%x, %v: want an htree", fl, err)
	}
	moves, err := RepairNestedHome(context.Background(), disk)
	if err != nil || len(moves) != 302 {
		t.Fatalf("%d moves, %v", len(moves), err)
	}
	if out, err := exec.Command("e2fsck", "-fn", disk).CombinedOutput(); err != nil {
		t.Errorf("repaired disk is not clean: %v\n%s", err, out)
	}
	if top := ls(t, disk, "/"); len(top) != 2+1+600+301 {
		t.Errorf("top holds %d entries, want %d", len(top), 2+1+600+301)
	}
}
