package blockdev

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"golang.org/x/sys/unix"
)

func writeFiles(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for p, body := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSysfsLookups(t *testing.T) {
	sys := t.TempDir()
	writeFiles(t, sys, map[string]string{
		"block/loop0/loop/backing_file": "/state/img.ext4 (deleted)\n",
		"block/loop1/loop/backing_file": "/state/img.ext4\n",
		"block/loop1/holders/dm-0":      "",
		"block/loop2/loop/backing_file": "/state/cow.img\n",
		"block/loop3/size":              "0\n",
		"block/dm-0/dm/name":            "banger-abc-origin\n",
		"block/dm-1/dm/name":            "banger-abc\n",
	})
	for dev, want := range map[string]string{"/dev/loop0": "/state/img.ext4", "/dev/loop2": "/state/cow.img", "/dev/loop3": "", "/dev/loop9": ""} {
		if got, err := LoopBacking(sys, dev); err != nil || got != want {
			t.Errorf("LoopBacking(%s) = %q, %v; want %q", dev, got, err, want)
		}
	}
	if _, err := LoopBacking(sys, "/dev/sda"); !errors.Is(err, ErrNotLoop) {
		t.Errorf("LoopBacking(/dev/sda): %v", err)
	}
	if got, _ := LoopsBackedBy(sys, "/state/img.ext4", false); !reflect.DeepEqual(got, []string{"/dev/loop0", "/dev/loop1"}) {
		t.Errorf("all loops of img: %v", got)
	}
	if got, _ := LoopsBackedBy(sys, "/state/img.ext4", true); !reflect.DeepEqual(got, []string{"/dev/loop0"}) {
		t.Errorf("unheld loops of img: %v", got)
	}
	if n, _ := DMNode(sys, "banger-abc"); n != "dm-1" {
		t.Errorf("dmNode = %q", n)
	}
	if n, _ := DMNode(sys, "banger-zzz"); n != "" {
		t.Errorf("dmNode of a missing device = %q", n)
	}
}

func TestLoopBackingDeleted(t *testing.T) {
	sys := t.TempDir()
	writeFiles(t, sys, map[string]string{"block/loop4/loop/backing_file": "/state/cow.img (deleted)\n"})
	p, deleted, err := LoopBackingName(sys, "/dev/loop4")
	if err != nil || p != "/state/cow.img" || !deleted {
		t.Fatalf("LoopBackingName = %q %v %v", p, deleted, err)
	}
}

func TestDeviceAt(t *testing.T) {
	sys := t.TempDir()
	writeFiles(t, sys, map[string]string{
		"dev/block/7:3/uevent":    "MAJOR=7\nMINOR=3\nDEVNAME=loop3\nDEVTYPE=disk\n",
		"dev/block/253:0/uevent":  "MAJOR=253\nMINOR=0\nDEVNAME=dm-0\n",
		"dev/block/253:0/dm/name": "banger-abc-origin\n",
		"dev/block/8:0/uevent":    "MAJOR=8\nMINOR=0\nDEVNAME=sda\n",
		"dev/block/9:9/uevent":    "DEVNAME=../evil\n",
	})
	for majmin, want := range map[string]Device{
		"7:3":   {Kind: KindLoop, Node: "loop3"},
		"253:0": {Kind: KindDM, Node: "dm-0", Name: "banger-abc-origin"},
		"8:0":   {Kind: KindOther, Node: "sda"},
	} {
		got, err := DeviceAt(sys, majmin)
		if err != nil || got != want {
			t.Errorf("DeviceAt(%s) = %+v, %v; want %+v", majmin, got, err, want)
		}
	}
	for _, bad := range []string{"9:9", "1:2", "x:1", "7", "../7:3"} {
		if _, err := DeviceAt(sys, bad); err == nil {
			t.Errorf("DeviceAt(%q) accepted", bad)
		}
	}
}

func TestParseTable(t *testing.T) {
	ts, err := ParseTable("0 2048 linear 7:0 0\n2048 6144 zero\n")
	if err != nil || len(ts) != 2 {
		t.Fatalf("ParseTable = %v, %v", ts, err)
	}
	if d, err := ts[0].Devices(); err != nil || !reflect.DeepEqual(d, []string{"7:0"}) {
		t.Errorf("linear devices %v %v", d, err)
	}
	if d, err := ts[1].Devices(); err != nil || len(d) != 0 {
		t.Errorf("zero devices %v %v", d, err)
	}
	ts, _ = ParseTable("0 8192 snapshot 253:0 7:1 P 8\n")
	if d, err := ts[0].Devices(); err != nil || !reflect.DeepEqual(d, []string{"253:0", "7:1"}) {
		t.Errorf("snapshot devices %v %v", d, err)
	}
	for _, line := range []string{"0 10 crypt aes x 0 7:0 0", "0 10 linear 7:0", "0 10 snapshot 253:0 7:1"} {
		ts, err := ParseTable(line)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ts[0].Devices(); !errors.Is(err, ErrTarget) {
			t.Errorf("%q: %v, want ErrTarget", line, err)
		}
	}
	for _, bad := range []string{"0 linear", "x 10 zero"} {
		if _, err := ParseTable(bad); err == nil {
			t.Errorf("ParseTable(%q) accepted", bad)
		}
	}
}

func TestLoopByInodePrivileged(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: attaches a loop device")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skip("needs loop devices: /dev/loop-control missing")
	}
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Truncate(p, 1<<20)
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dev, lf, err := AttachLoop(f, true, false)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	var st unix.Stat_t
	unix.Fstat(int(f.Fd()), &st)
	l2, err := OpenLoop(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	lo, err := Status(l2)
	if err != nil || !lo.Same(st) || lo.Flags&loFlagsReadOnly == 0 {
		t.Fatalf("Status = %+v, %v; want the inode of %s, read-only", lo, err, p)
	}
	if b, _ := LoopBacking("/sys", dev); b != p {
		t.Errorf("LoopBacking = %q", b)
	}
	lf.Close() // l2 is the only opener left: the detach is immediate
	if err := Detach(l2); err != nil {
		t.Fatal(err)
	}
	if _, err := Status(l2); !errors.Is(err, ErrNotAttached) {
		t.Errorf("after detach: %v, want ErrNotAttached", err)
	}
	if err := Detach(l2); err != nil {
		t.Errorf("detaching a detached loop: %v", err)
	}
	for _, bad := range []string{"/dev/null", "/dev/sda", "/dev/loop-control", "/dev/loop1/../null"} {
		if _, err := OpenLoop(bad); !errors.Is(err, ErrNotLoop) {
			t.Errorf("OpenLoop(%s) = %v, want ErrNotLoop", bad, err)
		}
	}
}
