package hostops

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"banger/internal/blockdev"
	"banger/internal/capability"
)

// TestAdversarialDM runs the device-mapper ops under the same attack,
// in-process: each request names either the caller's loop and device or a
// victim's (a loop of a root-owned outside file, a banger-named device over
// it), with the caller's backing path that the attackers keep swapping.
// Victim requests must always be refused and the victims stay as they
// were. (Written against the ops' contract; this repository's CI kernel
// has no device-mapper, so it skips there.)
func TestAdversarialDM(t *testing.T) {
	needAdversarial(t)
	if _, err := capability.DeviceMapper(); err != nil {
		t.Skip(err) // "no device-mapper in this kernel: ..."
	}
	haveTools(t, "dmsetup")
	base := advBase(t)
	uid := freeUID()
	w := newAdvWorld(t, base, uid, uid)
	attachVictims(t, w)
	tag := randHex(4)
	victimDM := "banger-victim" + tag
	dmCreate(t, victimDM, fmt.Sprintf("0 2048 linear %s 0\n", majmin(t, w.Victims["secret"])))
	c := Caller{UID: uid, GID: uid, Roots: w.Roots}
	call := func(ctx context.Context, op string, args, out any) error {
		return callDispatch(ctx, c, op, args, out)
	}
	contents := w.contents()
	snap := w.snapshot()
	wt := w.watch(t)
	defer wt.close()
	for _, sc := range dmScenarios(tag, victimDM) {
		t.Run(sc.op, func(t *testing.T) {
			runScenario(t, w, sc, call, true, runsScaled(sc.runs), wt)
		})
	}
	var st unix.Stat_t
	if err := unix.Stat("/dev/mapper/"+victimDM, &st); err != nil || st.Uid != 0 {
		t.Errorf("victim device %s: owner %d, %v", victimDM, st.Uid, err)
	}
	if out, err := Run(context.Background(), "dmsetup", "table", victimDM); err != nil || !strings.Contains(string(out), majmin(t, w.Victims["secret"])) {
		t.Errorf("victim device %s changed: %q %v", victimDM, out, err)
	}
	checkAfter(t, w, contents, snap, wt.events())
}

func callDispatch(ctx context.Context, c Caller, op string, args, out any) error {
	in, err := json.Marshal(args)
	if err != nil {
		return err
	}
	res, err := dispatch(ctx, c, op, in)
	if err != nil || out == nil || len(res) == 0 {
		return err
	}
	return json.Unmarshal(res, out)
}

func majmin(t testing.TB, dev string) string {
	var st unix.Stat_t
	must(t, unix.Stat(dev, &st))
	return fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
}

func dmCreate(t testing.TB, name, table string) {
	t.Helper()
	if _, err := runInput(context.Background(), table, "dmsetup", "create", name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { Run(context.Background(), "dmsetup", "remove", "--retry", name) })
}

// rootLoop attaches rel in the real d as root (read-write, no autoclear).
func (x *advRun) rootLoop(rel string) string {
	x.t.Helper()
	fd, err := unix.Openat(x.dFd, rel, unix.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	must(x.t, err)
	f := os.NewFile(uintptr(fd), rel)
	defer f.Close()
	dev, lf, err := blockdev.AttachLoop(f, false, false)
	must(x.t, err)
	lf.Close()
	return dev
}

func dmScenarios(tag, victimDM string) []scenario {
	var imgLoop, cowLoop, ownDM string
	victimLoop := func(x *advRun) string { return x.w.Victims["secret"] }
	table := func(name string) string {
		out, _ := Run(context.Background(), "dmsetup", "table", name)
		return string(out)
	}
	remove := func(x *advRun, name string) {
		_, err := Run(context.Background(), "dmsetup", "remove", "--retry", name)
		must(x.t, err)
	}
	return []scenario{
		{
			op: "dm-create-origin", runs: advRuns,
			setup: func(x *advRun) []target {
				x.mkfile("img.ext4", "", 1<<20, 0o600)
				imgLoop = x.rootLoop("img.ext4")
				return []target{{name: "img.ext4", decoys: x.decoys("img.ext4")}}
			},
			run: func(ctx context.Context, x *advRun, i int) {
				name := fmt.Sprintf("banger-o%s-%d", tag, i)
				loop := imgLoop
				if i%2 == 1 {
					loop = victimLoop(x)
				}
				err := x.call(ctx, "dm-create-origin", DMOriginArgs{Name: name, ImageLoop: loop, ImageBacking: x.path("img.ext4"), SizeBytes: 2 << 20}, nil)
				if !x.record(err) {
					return
				}
				if loop != imgLoop || !strings.Contains(table(name), majmin(x.t, imgLoop)) {
					x.fatalf("dm-create-origin built %s over %s: %q", name, loop, table(name))
				}
				remove(x, name) // autoclear then detaches the image loop
				imgLoop = x.rootLoop("img.ext4")
			},
		},
		{
			op: "dm-create-snapshot", runs: advRuns,
			setup: func(x *advRun) []target {
				x.mkfile("img2.ext4", "", 1<<20, 0o600)
				x.mkfile("cow", "", 4<<20, 0o600)
				ownDM = "banger-so" + tag
				dmCreate(x.t, ownDM, fmt.Sprintf("0 2048 linear %s 0\n", majmin(x.t, x.rootLoop("img2.ext4"))))
				cowLoop = x.rootLoop("cow")
				return []target{{name: "cow", decoys: x.decoys("cow")}}
			},
			run: func(ctx context.Context, x *advRun, i int) {
				name := fmt.Sprintf("banger-s%s-%d", tag, i)
				origin, cow := ownDM, cowLoop
				switch i % 3 {
				case 1:
					origin = victimDM // another user's origin: the snapshot would read it
				case 2:
					cow = victimLoop(x)
				}
				err := x.call(ctx, "dm-create-snapshot", DMSnapshotArgs{Name: name, Origin: origin, COWLoop: cow, COWBacking: x.path("cow")}, nil)
				if !x.record(err) {
					return
				}
				if origin != ownDM || cow != cowLoop {
					x.fatalf("dm-create-snapshot built %s over %s and %s", name, origin, cow)
				}
				remove(x, name)
				cowLoop = x.rootLoop("cow")
			},
		},
		dmNameScenario("dm-remove", tag, victimDM),
		dmNameScenario("dm-chown", tag, victimDM),
	}
}

// dmNameScenario attacks dm-remove or dm-chown: half the requests name the
// caller's device over its own loop (whose backing the attackers swap),
// half the victim device.
func dmNameScenario(op, tag, victimDM string) scenario {
	var own string
	create := func(x *advRun) {
		own = fmt.Sprintf("banger-n%s-%d", tag, x.runs)
		dmCreate(x.t, own, fmt.Sprintf("0 2048 linear %s 0\n", majmin(x.t, x.rootLoop("disk.img"))))
	}
	return scenario{
		op: op, runs: advRuns,
		setup: func(x *advRun) []target {
			x.mkfile("disk.img", "", 1<<20, 0o600)
			create(x)
			return []target{{name: "disk.img", decoys: x.decoys("disk.img")}}
		},
		run: func(ctx context.Context, x *advRun, i int) {
			name := own
			if i%2 == 1 {
				name = victimDM
			}
			err := x.call(ctx, op, DMNameArgs{Name: name}, nil)
			if !x.record(err) {
				return
			}
			if name == victimDM {
				x.fatalf("%s accepted the victim device %s", op, victimDM)
			}
			if op == "dm-remove" {
				create(x)
				return
			}
			var st unix.Stat_t
			if unix.Stat("/dev/mapper/"+own, &st) != nil || int(st.Uid) != x.w.UID {
				x.fatalf("dm-chown succeeded but /dev/mapper/%s is owned by %d", own, st.Uid)
			}
			must(x.t, unix.Chown("/dev/mapper/"+own, 0, 0))
		},
	}
}
