//go:build system

package test

import (
	"archive/tar"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// cpTree builds the tree `vm cp` must keep: modes 0755/0600/0444, a 0700
// directory, a relative and a dangling symlink, a hard link, an owner, a
// past mtime and (with big) a 200 MiB random file.
func cpTree(t *testing.T, dir string, big bool) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(dir, "sub", "private"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "run.sh"), []byte("#!/bin/sh\necho hi\n"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "secret"), []byte("s3cret\n"), 0o600))
	must(os.WriteFile(filepath.Join(dir, "sub", "ro.txt"), []byte("read only\n"), 0o444))
	must(os.WriteFile(filepath.Join(dir, "sub", "private", "key"), []byte("k"), 0o600))
	must(os.Symlink("../run.sh", filepath.Join(dir, "sub", "rel")))
	must(os.Symlink("does/not/exist", filepath.Join(dir, "dangling")))
	must(os.Link(filepath.Join(dir, "secret"), filepath.Join(dir, "sub", "hard")))
	must(os.Lchown(filepath.Join(dir, "sub", "ro.txt"), 1234, 4321))
	if big {
		f, err := os.Create(filepath.Join(dir, "big.bin"))
		must(err)
		_, err = io.CopyN(f, rand.Reader, 200<<20)
		must(err)
		must(f.Close())
	}
	must(os.Chmod(filepath.Join(dir, "sub", "private"), 0o700))
	old := time.Date(2003, 4, 5, 6, 7, 8, 123456789, time.UTC)
	must(os.Chtimes(filepath.Join(dir, "sub", "ro.txt"), old, old))
	must(os.Chtimes(filepath.Join(dir, "sub"), old, old))
}

// treeSig describes every entry under dir: type and mode, owner, mtime,
// link target or sha256 of the content, and which entries are hard links
// of one file.
func treeSig(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	inodes := map[uint64]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		desc := fmt.Sprintf("%v %d:%d %s", fi.Mode(), st.Uid, st.Gid, fi.ModTime().UTC().Format(time.RFC3339Nano))
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			desc += " -> " + l
		case fi.Mode().IsRegular():
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			h := sha256.New()
			_, err = io.Copy(h, f)
			f.Close()
			if err != nil {
				return err
			}
			desc += fmt.Sprintf(" %d %s", fi.Size(), hex.EncodeToString(h.Sum(nil)))
			if st.Nlink > 1 {
				if first, ok := inodes[st.Ino]; ok {
					desc += " linked to " + first
				} else {
					inodes[st.Ino] = rel
				}
			}
		}
		out[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameTree(t *testing.T, what, a, b string) {
	t.Helper()
	sa, sb := treeSig(t, a), treeSig(t, b)
	for k, v := range sa {
		if sb[k] != v {
			t.Errorf("%s: %s is %q, want %q", what, k, sb[k], v)
		}
	}
	for k := range sb {
		if _, ok := sa[k]; !ok {
			t.Errorf("%s: extra entry %s", what, k)
		}
	}
}

// TestVMCp: `vm cp` both ways through fcfake's vsock, whose guest is the
// real agent handler on the host (so guest paths are host paths under a
// temp dir): a tree with modes, symlinks, owners, mtimes and a 200 MiB
// file compared byte for byte; docker's landing rules; "-" both ways;
// refusals (exit 2, one line, nothing written); a host destination symlink
// pointing outside is not followed; the refusal of an agent before cp.
func TestVMCp(t *testing.T) {
	e := newEnv(t, "")
	e.registerImage()
	e.ok("vm", "create", "dev")
	before := e.vm("dev").LastUsedAt
	host := t.TempDir()
	guest := t.TempDir()
	src := filepath.Join(host, "src")
	cpTree(t, src, true)

	// Host → guest, into an existing directory: guest/src.
	if _, errOut, code := e.bangerIO(nil, "vm", "cp", src, "dev:"+guest+"/"); code != 0 {
		t.Fatalf("vm cp to the guest: exit %d, stderr %q", code, errOut)
	}
	sameTree(t, "host → guest", src, filepath.Join(guest, "src"))
	if after := e.vm("dev").LastUsedAt; !after.After(before) {
		t.Errorf("last_used_at %v did not move past %v: vm cp must count as use", after, before)
	}

	// Guest → host, onto a missing name: host/back is the tree.
	back := filepath.Join(host, "back")
	if _, errOut, code := e.bangerIO(nil, "vm", "cp", "dev:"+filepath.Join(guest, "src"), back); code != 0 {
		t.Fatalf("vm cp from the guest: exit %d, stderr %q", code, errOut)
	}
	sameTree(t, "guest → host", src, back)

	// A file onto an existing directory lands inside it; onto a new name
	// it takes the name.
	if _, errOut, code := e.bangerIO(nil, "vm", "cp", "dev:"+filepath.Join(guest, "src", "run.sh"), host); code != 0 {
		t.Fatalf("vm cp of a file: exit %d, stderr %q", code, errOut)
	}
	if fi, err := os.Stat(filepath.Join(host, "run.sh")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("file into a directory: %v %v", fi, err)
	}
	if _, errOut, code := e.bangerIO(nil, "vm", "cp", filepath.Join(src, "secret"), "dev:"+filepath.Join(guest, "renamed")); code != 0 {
		t.Fatalf("vm cp of a file to a new name: exit %d, stderr %q", code, errOut)
	}
	if b, err := os.ReadFile(filepath.Join(guest, "renamed")); err != nil || string(b) != "s3cret\n" {
		t.Errorf("file to a new name: %q %v", b, err)
	}

	// "-": the guest's tar on stdout, then that tar from stdin into a
	// guest directory.
	tarOut, errOut, code := e.bangerIO(nil, "vm", "cp", "dev:"+filepath.Join(guest, "src", "sub"), "-")
	if code != 0 {
		t.Fatalf("vm cp to stdout: exit %d, stderr %q", code, errOut)
	}
	var names []string
	tr := tar.NewReader(bytes.NewReader(tarOut))
	for {
		h, err := tr.Next()
		if err != nil {
			if err != io.EOF {
				t.Fatalf("reading the stdout tar: %v", err)
			}
			break
		}
		names = append(names, h.Name)
	}
	if !strings.Contains(strings.Join(names, " "), "sub/ro.txt") || names[0] != "sub/" {
		t.Errorf("stdout tar entries %q", names)
	}
	stdinDir := filepath.Join(guest, "fromstdin")
	os.Mkdir(stdinDir, 0o755)
	if _, errOut, code := e.bangerIO(tarOut, "vm", "cp", "-", "dev:"+stdinDir); code != 0 {
		t.Fatalf("vm cp from stdin: exit %d, stderr %q", code, errOut)
	}
	sameTree(t, "stdout tar → stdin", filepath.Join(src, "sub"), filepath.Join(stdinDir, "sub"))

	// Refusals: one line, exit 2, nothing written.
	for _, tt := range []struct {
		args []string
		msg  string
	}{
		{[]string{"dev:" + filepath.Join(guest, "nope"), filepath.Join(host, "x")}, "no such file or directory in the guest"},
		{[]string{filepath.Join(host, "nope"), "dev:" + guest}, "no such file or directory: " + filepath.Join(host, "nope")},
		{[]string{filepath.Join(src, "secret"), "dev:" + filepath.Join(guest, "no", "such", "x")}, "must be an existing directory"},
		{[]string{src, "dev:" + filepath.Join(guest, "renamed")}, "cannot copy a directory onto the file"},
		{[]string{"dev:" + filepath.Join(guest, "src"), filepath.Join(host, "back", "secret")}, "cannot copy a directory onto the file"},
		{[]string{"dev:/a", "web:/b"}, "one VM"},
		{[]string{host, filepath.Join(host, "x")}, "VM:PATH"},
		{[]string{"nope:/root", filepath.Join(host, "x")}, "nope"},
	} {
		_, errOut, code := e.bangerIO(nil, append([]string{"vm", "cp"}, tt.args...)...)
		wantCode := 2
		if strings.HasPrefix(tt.args[0], "nope:") {
			wantCode = 1 // no such VM: the daemon's not-found
		}
		if code != wantCode || !strings.Contains(errOut, tt.msg) || strings.Count(strings.TrimSpace(errOut), "\n") > 0 {
			t.Errorf("vm cp %q: exit %d, stderr %q; want %d and one line containing %q", tt.args, code, errOut, wantCode, tt.msg)
		}
	}
	for _, p := range []string{filepath.Join(host, "x"), filepath.Join(guest, "no")} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("a refused copy wrote %s", p)
		}
	}

	// A guest tree whose symlink points outside copies as a link; a host
	// destination whose symlink points outside is not followed.
	outside := filepath.Join(host, "outside")
	os.Mkdir(outside, 0o755)
	evil := filepath.Join(guest, "evil")
	os.MkdirAll(filepath.Join(evil, "d"), 0o755)
	os.WriteFile(filepath.Join(evil, "d", "payload"), []byte("pwn"), 0o644)
	os.Symlink(outside, filepath.Join(evil, "escape"))
	dst := filepath.Join(host, "dst")
	os.MkdirAll(dst, 0o755)
	if _, errOut, code := e.bangerIO(nil, "vm", "cp", "dev:"+evil, dst); code != 0 {
		t.Fatalf("vm cp of a tree with an outward symlink: exit %d, stderr %q", code, errOut)
	}
	if l, err := os.Readlink(filepath.Join(dst, "evil", "escape")); err != nil || l != outside {
		t.Errorf("the outward symlink was not copied as a link: %q %v", l, err)
	}
	trap := filepath.Join(host, "trap")
	os.Mkdir(trap, 0o755)
	os.Symlink(outside, filepath.Join(trap, "evil"))
	_, errOut, code = e.bangerIO(nil, "vm", "cp", "dev:"+evil, trap)
	if code == 0 || strings.Count(strings.TrimSpace(errOut), "\n") > 0 {
		t.Errorf("vm cp through a destination symlink: exit %d, stderr %q; want a one-line refusal", code, errOut)
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Errorf("vm cp wrote outside the destination: %v", ents)
	}

	// A hostile tar on stdin is refused in the guest (exit 1: entries
	// before it may be written) and nothing lands outside the directory.
	var hb bytes.Buffer
	tw := tar.NewWriter(&hb)
	tw.WriteHeader(&tar.Header{Name: "esc", Typeflag: tar.TypeSymlink, Linkname: outside, Mode: 0o777})
	tw.WriteHeader(&tar.Header{Name: "esc/pwn", Typeflag: tar.TypeReg, Mode: 0o644, Size: 3})
	tw.Write([]byte("pwn"))
	tw.Close()
	hostileDir := filepath.Join(guest, "hostile")
	os.Mkdir(hostileDir, 0o755)
	_, errOut, code = e.bangerIO(hb.Bytes(), "vm", "cp", "-", "dev:"+hostileDir)
	if code != 1 || !strings.Contains(errOut, "outside the destination") || strings.Count(strings.TrimSpace(errOut), "\n") > 0 {
		t.Errorf("hostile tar on stdin: exit %d, stderr %q; want 1 and one line saying it leads outside", code, errOut)
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Errorf("the hostile tar wrote outside: %v", ents)
	}

	// A large copy on a terminal (script gives banger one) shows a
	// progress line on stderr; -q shows none.
	for _, quiet := range []bool{false, true} {
		args := "vm cp dev:" + filepath.Join(guest, "src", "big.bin") + " " + filepath.Join(host, "progress.bin")
		if quiet {
			args = "vm cp -q" + strings.TrimPrefix(args, "vm cp")
		}
		sc := exec.Command("ip", "netns", "exec", e.ns, "script", "-qec", e.bins.banger+" "+args, "/dev/null")
		sc.Env = e.environ()
		b, err := sc.CombinedOutput()
		if err != nil {
			t.Fatalf("%s under script: %v: %q", args, err, b)
		}
		if got := strings.Contains(string(b), "MiB copied"); got == quiet {
			t.Errorf("%s on a terminal: output %q; want a progress line: %v", args, b, !quiet)
		}
	}
	if _, _, code := e.bangerIO(nil, "vm", "cp", "dev:"+filepath.Join(guest, "src", "big.bin"), filepath.Join(host, "progress.bin")); code != 0 {
		t.Errorf("re-copy onto an existing file: exit %d", code)
	}

	// Completion: VM names as NAME: prefixes next to local paths; once one
	// side is a VM, the other completes as files.
	words, dir := e.completions("vm", "cp", "d")
	if !slices.Contains(words, "dev:") || dir != ":6" {
		t.Errorf("completing vm cp d: %q %s; want dev: with NoSpace|NoFileComp (:6)", words, dir)
	}
	words, _ = e.completions("vm", "cp", filepath.Join(host, "sr"))
	if !slices.Contains(words, src+"/") {
		t.Errorf("completing a local path: %q, want %s/", words, src)
	}
	if _, dir := e.completions("vm", "cp", "dev:/root/x", ""); dir != ":0" {
		t.Errorf("completing DST after a VM side: directive %s, want file completion (:0)", dir)
	}

	e.ok("vm", "stop", "dev")
	_, errOut, code = e.bangerIO(nil, "vm", "cp", src, "dev:"+guest)
	if code != 1 || !strings.Contains(errOut, "vm start dev") {
		t.Errorf("cp on a stopped vm: exit %d, stderr %q; want 1 naming `banger vm start dev`", code, errOut)
	}
	e.ok("daemon", "stop")
	e.extra = []string{"FCFAKE_AGENT_LEGACY=1"}
	e.ok("vm", "start", "dev")
	_, errOut, code = e.bangerIO(nil, "vm", "cp", filepath.Join(src, "secret"), "dev:"+guest)
	if code != 1 || !strings.Contains(errOut, "older than this banger (it has no cp)") || !strings.Contains(errOut, "banger image build") {
		t.Errorf("cp with a legacy agent: exit %d, stderr %q; want 1 and the rebuild hint", code, errOut)
	}
	e.ok("vm", "delete", "dev")
	e.assertClean()
}
