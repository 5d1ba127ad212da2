package hostops

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"banger/internal/blockdev"
)

// TestCheckDMTables checks device-mapper tables against the caller with
// real loop devices and a fake sysfs and dmsetup (this kernel may have no
// device-mapper): a device is the caller's only when every loop in its
// table is backed, by inode, by a file of the caller's with one link, and
// every dm device it stacks on passes the same check.
func TestCheckDMTables(t *testing.T) {
	needRoot(t)
	base := t.TempDir()
	os.Chmod(base, 0o755)
	uid := freeUID()
	root := filepath.Join(base, "root")
	outside := filepath.Join(base, "outside")
	must(t, os.MkdirAll(root, 0o700))
	must(t, os.MkdirAll(outside, 0o755))
	must(t, os.Chown(root, uid, uid))
	file := func(p string, owner int) string {
		must(t, os.WriteFile(p, nil, 0o600))
		must(t, os.Truncate(p, 1<<20))
		must(t, os.Chown(p, owner, owner))
		return p
	}
	img := file(filepath.Join(root, "img.ext4"), uid)
	cow := file(filepath.Join(root, "cow"), uid)
	theirs := file(filepath.Join(outside, "theirs.img"), 0)
	hard := filepath.Join(root, "hard.img")
	must(t, os.Link(theirs, hard))
	gone := file(filepath.Join(root, "gone.img"), uid)

	sys := t.TempDir()
	loops := map[string]string{} // name -> "7:N"
	attach := func(name, p string) {
		f, err := os.Open(p)
		must(t, err)
		dev, lf, err := blockdev.AttachLoop(f, true, false)
		f.Close()
		must(t, err)
		t.Cleanup(func() { blockdev.Detach(lf); lf.Close() })
		var st unix.Stat_t
		must(t, unix.Stat(dev, &st))
		majmin := fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
		node := filepath.Base(dev)
		backing := p
		if name == "gone" {
			backing += " (deleted)"
		}
		writeFiles(t, sys, map[string]string{
			"dev/block/" + majmin + "/uevent":      "DEVNAME=" + node + "\n",
			"block/" + node + "/loop/backing_file": backing + "\n",
		})
		loops[name] = majmin
	}
	for name, p := range map[string]string{"img": img, "cow": cow, "theirs": theirs, "hard": hard, "gone": gone} {
		attach(name, p)
	}
	writeFiles(t, sys, map[string]string{
		"dev/block/253:0/uevent": "DEVNAME=dm-0\n", "dev/block/253:0/dm/name": "banger-a-origin\n",
		"dev/block/253:1/uevent": "DEVNAME=dm-1\n", "dev/block/253:1/dm/name": "banger-b-origin\n",
		"dev/block/253:2/uevent": "DEVNAME=dm-2\n", "dev/block/253:2/dm/name": "vg0-root\n",
		"dev/block/8:0/uevent": "DEVNAME=sda\n",
	})
	tables := map[string]string{
		"banger-a-origin": fmt.Sprintf("0 2048 linear %s 0\n2048 4096 zero\n", loops["img"]),
		"banger-a":        fmt.Sprintf("0 6144 snapshot 253:0 %s P 8\n", loops["cow"]),
		"banger-b-origin": fmt.Sprintf("0 2048 linear %s 0\n", loops["theirs"]),
		"banger-b":        fmt.Sprintf("0 2048 snapshot 253:1 %s P 8\n", loops["cow"]),
		"banger-hard":     fmt.Sprintf("0 2048 linear %s 0\n", loops["hard"]),
		"banger-crypt":    fmt.Sprintf("0 2048 crypt aes-xts-plain64 00 0 %s 0\n", loops["img"]),
		"banger-disk":     "0 2048 linear 8:0 0\n",
		"banger-vg":       fmt.Sprintf("0 2048 snapshot 253:2 %s P 8\n", loops["cow"]),
		"banger-gone":     fmt.Sprintf("0 2048 linear %s 0\n", loops["gone"]),
		"banger-empty":    "",
	}
	tableOf := func(_ context.Context, name string) (string, error) {
		s, ok := tables[name]
		if !ok {
			return "", errors.New("no such device")
		}
		return s, nil
	}
	cf := Caller{UID: uid, GID: uid, Roots: []string{root}}.files()
	cf.sys = sys
	defer cf.Close()
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		depth     int
		deletedOK bool
		why       string // "" for accepted
	}{
		{"banger-a-origin", 0, false, ""},
		{"banger-a", 1, false, ""},
		{"banger-a", 0, false, "which is not banger's"},
		{"banger-b-origin", 0, false, "outside banger's directories"},
		{"banger-b", 1, false, "outside banger's directories"},
		{"banger-hard", 0, false, "2 links"},
		{"banger-crypt", 0, false, "unexpected device-mapper target"},
		{"banger-disk", 0, false, "which is not banger's"},
		{"banger-vg", 1, false, "must start with"},
		{"banger-gone", 0, false, "was deleted"},
		{"banger-gone", 0, true, ""},
		{"banger-empty", 0, false, "has no table"},
	} {
		err := cf.checkDM(ctx, tableOf, tc.name, tc.depth, tc.deletedOK)
		switch {
		case tc.why == "" && err != nil:
			t.Errorf("%s (depth %d): %v, want accepted", tc.name, tc.depth, err)
		case tc.why != "" && (!errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tc.why)):
			t.Errorf("%s (depth %d): %v, want refused saying %q", tc.name, tc.depth, err, tc.why)
		}
	}
	// A loop the caller names with a backing of theirs that is not the
	// loop's inode.
	lf, err := cf.ownedLoop("/dev/"+filepath.Base(devOf(t, sys, loops["theirs"])), img)
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "backed by another file") {
		t.Errorf("ownedLoop(their loop, our file) = %v", err)
	}
	if lf != nil {
		lf.Close()
	}
	lf, err = cf.ownedLoop("/dev/"+filepath.Base(devOf(t, sys, loops["img"])), img)
	if err != nil {
		t.Errorf("ownedLoop(our loop) = %v", err)
	} else {
		lf.Close()
	}
}

func devOf(t *testing.T, sys, majmin string) string {
	d, err := blockdev.DeviceAt(sys, majmin)
	must(t, err)
	return d.Node
}
