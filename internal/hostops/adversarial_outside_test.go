package hostops

// What the adversarial suite checks outside the roots: lstat snapshots
// (which raise no inotify event), contents at the end, and an inotify
// watch on every outside file and directory.

import (
	"bytes"
	"fmt"
	"os"
	"sort"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// fileState is what an op must not change about an outside path.
type fileState struct {
	Mode  uint32
	UID   uint32
	GID   uint32
	Size  int64
	Mtime unix.Timespec
}

func lstatState(p string) (fileState, bool) {
	var st unix.Stat_t
	if unix.Lstat(p, &st) != nil {
		return fileState{}, false
	}
	return fileState{Mode: st.Mode, UID: st.Uid, GID: st.Gid, Size: st.Size, Mtime: st.Mtim}, true
}

// outsideSnapshot is the lstat of every outside path (no open: reading it
// raises no inotify event).
type outsideSnapshot map[string]fileState

func (w *advWorld) snapshot() outsideSnapshot {
	s := outsideSnapshot{}
	for _, p := range w.Paths {
		if st, ok := lstatState(p); ok {
			s[p] = st
		}
	}
	return s
}

// diff reports what changed since s: a changed or missing path; an entry
// created in or removed from an outside directory changes its mtime.
func (s outsideSnapshot) diff() []string {
	var out []string
	for p, want := range s {
		got, ok := lstatState(p)
		switch {
		case !ok:
			out = append(out, "deleted "+p)
		case got != want:
			out = append(out, fmt.Sprintf("changed %s: %+v -> %+v", p, want, got))
		}
	}
	sort.Strings(out)
	return out
}

// contents reads every outside regular file (as root, at the end: reading
// raises inotify events).
func (w *advWorld) contents() map[string]string {
	m := map[string]string{}
	for _, p := range w.Paths {
		if fi, err := os.Lstat(p); err == nil && fi.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			m[p] = string(b)
		}
	}
	return m
}

// watcher reports inotify events on the outside paths that only an open,
// a read, a write, a creation, a deletion or a move can raise.
type watcher struct {
	fd    int
	names map[int32]string
}

// IN_ATTRIB and IN_MOVE_SELF are left out: the attacker's hard links to an
// outside file change its link count and move with the swaps. A move of an
// outside directory shows as IN_MOVED_FROM on its parent.
const watchMask = unix.IN_OPEN | unix.IN_ACCESS | unix.IN_MODIFY | unix.IN_CLOSE_WRITE | unix.IN_CREATE |
	unix.IN_DELETE | unix.IN_MOVED_FROM | unix.IN_MOVED_TO | unix.IN_DELETE_SELF

func (w *advWorld) watch(t testing.TB) *watcher {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	must(t, err)
	wt := &watcher{fd: fd, names: map[int32]string{}}
	for _, p := range w.Paths {
		wd, err := unix.InotifyAddWatch(fd, p, watchMask|unix.IN_DONT_FOLLOW)
		must(t, err)
		wt.names[int32(wd)] = p
	}
	return wt
}

// events drains the pending events.
func (wt *watcher) events() []string {
	var out []string
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Read(wt.fd, buf)
		if n <= 0 || err != nil {
			return out
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := ""
			if ev.Len > 0 {
				name = "/" + string(bytes.TrimRight(buf[off+unix.SizeofInotifyEvent:off+unix.SizeofInotifyEvent+int(ev.Len)], "\x00"))
			}
			if ev.Mask&watchMask != 0 {
				out = append(out, fmt.Sprintf("%s%s: inotify mask %#x", wt.names[ev.Wd], name, ev.Mask))
			}
			off += unix.SizeofInotifyEvent + int(ev.Len)
		}
	}
}

func (wt *watcher) close() { unix.Close(wt.fd) }
