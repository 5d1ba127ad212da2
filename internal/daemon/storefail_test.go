package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/storage"
	"banger/internal/store"
)

// settle runs what a later command or the periodic reconcile would: the
// reconcile of every VM, which finishes or undoes intents left behind.
func (r *rig) settle() {
	r.t.Helper()
	r.d.store.SetWriteHook(nil)
	r.d.reconcile(context.Background())
}

// failing runs op with the k-th store write from now failing, and (when
// persist) every one after it too; it reports op's error and whether the
// k-th write was reached at all.
func (r *rig) failing(k int, persist bool, op func() error) (error, bool) {
	n := 1
	if persist {
		n = -1
	}
	attempts := r.d.store.FailWrites(k-1, n)
	err := op()
	reached := attempts() >= k
	r.d.store.SetWriteHook(nil)
	return err, reached
}

// TestCreateWithFailingStore: for every write of a create, failing it once
// or for good makes the create fail (the saveVM error is not dropped), and
// after recovery nothing of the VM is left: no row, intent, directory or
// disk.
func TestCreateWithFailingStore(t *testing.T) {
	for _, persist := range []bool{false, true} {
		t.Run(fmt.Sprintf("persist=%v", persist), func(t *testing.T) {
			r := newRig(t, nil)
			r.start()
			r.registerImage()
			for k := 1; ; k++ {
				name := fmt.Sprintf("c%d", k)
				err, reached := r.failing(k, persist, func() error {
					return r.call(api.MethodVMCreate, api.VMCreateParams{Name: name, NoStart: true}, nil)
				})
				if !reached {
					if err != nil {
						t.Fatalf("create with no failing write: %v", err)
					}
					if k < 3 {
						t.Fatalf("a create wrote only %d times", k-1)
					}
					t.Logf("create writes %d times; each failure left nothing", k-1)
					r.mustCall(api.MethodVMDelete, api.VMRef{Ref: name}, nil)
					r.checkGone(name)
					return
				}
				if err == nil {
					t.Fatalf("write %d failed but the create succeeded", k)
				}
				if !strings.Contains(err.Error(), store.ErrInjected.Error()) {
					t.Fatalf("write %d: error does not carry the store's: %v", k, err)
				}
				r.settle()
				r.checkGone(name)
			}
		})
	}
}

// TestDeleteAndGrowWithFailingStore: a delete or a work-disk grow whose
// writes fail fails, and leaves either the whole VM or nothing of it.
func TestDeleteAndGrowWithFailingStore(t *testing.T) {
	for _, persist := range []bool{false, true} {
		t.Run(fmt.Sprintf("delete/persist=%v", persist), func(t *testing.T) {
			r := newRig(t, nil)
			r.start()
			r.registerImage()
			for k := 1; ; k++ {
				v := r.create(fmt.Sprintf("d%d", k))
				err, reached := r.failing(k, persist, func() error {
					return r.call(api.MethodVMDelete, api.VMRef{Ref: v.Name}, nil)
				})
				if !reached {
					if err != nil {
						t.Fatalf("delete with no failing write: %v", err)
					}
					t.Logf("delete writes %d times", k-1)
					r.checkGone(v.Name)
					return
				}
				if err == nil {
					t.Fatalf("write %d failed but the delete succeeded", k)
				}
				r.settle()
				if intact(r, v) {
					r.mustCall(api.MethodVMDelete, api.VMRef{Ref: v.Name}, nil)
				}
				r.checkGone(v.Name)
			}
		})
	}
	t.Run("grow", func(t *testing.T) {
		r := newRig(t, nil)
		r.start()
		r.registerImage()
		v := r.create("g")
		vcpu := v.VCPU + 1
		size := int64(4 << 20)
		for k := 1; ; k++ {
			size += 4 << 20
			err, reached := r.failing(k, true, func() error {
				return r.call(api.MethodVMSet, api.VMSetParams{Ref: "g", WorkDiskSize: fmt.Sprint(size), VCPU: ptr(vcpu)}, nil)
			})
			r.settle()
			var got api.VM
			r.mustCall(api.MethodVMGet, api.VMRef{Ref: "g"}, &got)
			if ins := r.intents(); len(ins) != 0 {
				t.Fatalf("intents left: %+v", ins)
			}
			if !reached {
				if err != nil || got.WorkDiskBytes != size || got.VCPU != vcpu {
					t.Fatalf("grow with no failing write: %v, recorded %d vcpu %d", err, got.WorkDiskBytes, got.VCPU)
				}
				return
			}
			if err == nil {
				t.Fatalf("write %d failed but the grow succeeded", k)
			}
			// Either the old size with nothing else changed, or (an end
			// write that failed, finished by recovery) the new size.
			if got.WorkDiskBytes == size-4<<20 && got.VCPU != v.VCPU {
				t.Fatalf("write %d: the grow failed but vcpu changed to %d", k, got.VCPU)
			}
			if got.WorkDiskBytes != size && got.WorkDiskBytes != size-4<<20 {
				t.Fatalf("write %d: recorded work disk %d", k, got.WorkDiskBytes)
			}
			fi, err := os.Stat(filepath.Join(v.Dir, "work.ext4"))
			if err != nil || fi.Size() < got.WorkDiskBytes {
				t.Fatalf("work disk %v %v smaller than recorded %d", fi, err, got.WorkDiskBytes)
			}
			size = got.WorkDiskBytes
		}
	})
}

func ptr[T any](v T) *T { return &v }

// intact reports whether the VM exists whole: its row, both disks, no
// intent. A VM half there fails the test.
func intact(r *rig, v api.VM) bool {
	r.t.Helper()
	var got api.VM
	err := r.call(api.MethodVMGet, api.VMRef{Ref: v.Name}, &got)
	if err != nil {
		if _, serr := os.Stat(v.Dir); !errors.Is(serr, os.ErrNotExist) {
			r.t.Fatalf("vm %s is gone but its directory is not: %v", v.Name, serr)
		}
		return false
	}
	for _, f := range []string{got.RootDisk, got.WorkDisk} {
		if _, err := os.Stat(f); err != nil {
			r.t.Fatalf("vm %s is listed but half deleted: %v", v.Name, err)
		}
	}
	if ins, _ := r.d.store.VMIntents(context.Background(), v.ID); len(ins) != 0 {
		r.t.Fatalf("vm %s keeps intents: %+v", v.Name, ins)
	}
	return true
}

// TestStartWithFailingStore: a start whose writes fail fails and leaves
// the VM stopped (or created) with its tap, NAT member and process gone.
func TestStartWithFailingStore(t *testing.T) {
	r := newRig(t, nil)
	r.start()
	r.registerImage()
	var vm api.VMResult
	r.mustCall(api.MethodVMCreate, api.VMCreateParams{Name: "s", NoStart: true, NAT: true}, &vm)
	// Writes 1 (the start intent), 2 (the root disk ready) and 3 (the
	// launched pid) come before the stand-in Firecracker would have to
	// answer; every one of them failing must undo the start.
	for k := 1; k <= 3; k++ {
		err, reached := r.failing(k, true, func() error {
			return r.call(api.MethodVMStart, api.VMRef{Ref: "s"}, nil)
		})
		if !reached || err == nil || !strings.Contains(err.Error(), store.ErrInjected.Error()) {
			t.Fatalf("write %d: reached %v, err %v", k, reached, err)
		}
		r.settle()
		var got api.VM
		r.mustCall(api.MethodVMGet, api.VMRef{Ref: "s"}, &got)
		if (got.State != api.StateStopped && got.State != api.StateCreated) || got.PID != 0 {
			t.Fatalf("write %d: state %s pid %d", k, got.State, got.PID)
		}
		if st := r.storageOf(got.ID); st.Phase != storage.PhaseDown {
			t.Fatalf("write %d: storage phase %q", k, st.Phase)
		}
		if taps := r.host.liveTaps(); len(taps) != 0 || r.host.natCount() != 0 {
			t.Fatalf("write %d: taps %v, %d nat members", k, taps, r.host.natCount())
		}
		if pid, _ := findFake(got.APISocket); pid != 0 {
			t.Fatalf("write %d: firecracker stand-in %d still runs", k, pid)
		}
		if ins := r.intents(); len(ins) != 0 {
			t.Fatalf("write %d: intents left: %+v", k, ins)
		}
	}
	r.mustCall(api.MethodVMDelete, api.VMRef{Ref: "s"}, nil)
	r.checkGone("s")
}

// findFake finds a live stand-in Firecracker serving sock.
func findFake(sock string) (int, error) {
	vm := &store.VM{Dir: filepath.Dir(sock)}
	return livePID(vm), nil
}

// TestImageOpsWithFailingStore: a register whose writes fail leaves no
// image and no files; a delete leaves the image whole or gone with its
// files.
func TestImageOpsWithFailingStore(t *testing.T) {
	r := newRig(t, nil)
	r.start()
	src := filepath.Join(r.dir, "img.ext4")
	if err := writeFakeExt4(src, 4<<20); err != nil {
		t.Fatal(err)
	}
	for k := 1; ; k++ {
		name := fmt.Sprintf("i%d", k)
		err, reached := r.failing(k, true, func() error {
			return r.call(api.MethodImageRegister, api.ImageRegisterParams{Name: name, RootfsPath: src}, nil)
		})
		r.settle()
		var l api.ImageList
		r.mustCall(api.MethodImageList, nil, &l)
		ents, _ := os.ReadDir(r.paths().ImagesDir)
		if !reached {
			if err != nil || len(l.Images) != 1 || len(ents) != 1 {
				t.Fatalf("register with no failing write: %v, images %+v, dirs %v", err, l.Images, ents)
			}
			break
		}
		if err == nil || len(l.Images) != 0 || len(ents) != 0 || len(r.intents()) != 0 {
			t.Fatalf("write %d: err %v, images %+v, dirs %v, intents %+v", k, err, l.Images, ents, r.intents())
		}
	}
	// Delete: one write (row and intent together), then the files, then
	// the intent's end.
	for k := 1; k <= 2; k++ {
		var l api.ImageList
		r.mustCall(api.MethodImageList, nil, &l)
		if len(l.Images) == 0 {
			r.registerImage()
			r.mustCall(api.MethodImageList, nil, &l)
		}
		img := l.Images[0]
		err, _ := r.failing(k, true, func() error {
			return r.call(api.MethodImageDelete, api.ImageRef{Name: img.Name}, nil)
		})
		r.settle()
		_, statErr := os.Stat(filepath.Dir(img.RootfsPath))
		var after api.ImageList
		r.mustCall(api.MethodImageList, nil, &after)
		switch {
		case k == 1 && (err == nil || len(after.Images) != 1 || statErr != nil):
			t.Fatalf("delete with its first write failing: %v, images %+v, dir %v", err, after.Images, statErr)
		case k == 2 && (len(after.Images) != 0 || !errors.Is(statErr, os.ErrNotExist) || len(r.intents()) != 0):
			t.Fatalf("delete with its intent's end failing: images %+v, dir %v, intents %+v", after.Images, statErr, r.intents())
		}
	}
}

// TestStartupServesWhileReconciling: with many interrupted stops whose
// cleanup is held up, the socket answers, their cleanups run at once (not
// one after another), and a command on one of those VMs waits for its
// cleanup and then works.
func TestStartupServesWhileReconciling(t *testing.T) {
	r := newRig(t, nil)
	r.start()
	r.registerImage()
	r.stop()
	ready := storage.State{Driver: storage.DriverCopy, Phase: storage.PhaseReady, RootDisk: "$DIR/rootfs.ext4", WorkDisk: "$DIR/work.ext4"}
	const n = 8
	for i := range n {
		v := r.plantVM(fmt.Sprintf("v%d", i), api.StateStopping, ready, []string{opStop}, []string{"rootfs.ext4", "work.ext4"})
		r.host.taps[v.Tap] = true
	}
	r.host.block = make(chan struct{})
	r.startServing()
	// The socket answers while every cleanup is held inside DeleteTap.
	deadline := time.Now().Add(20 * time.Second)
	for {
		r.host.mu.Lock()
		inflight := r.host.inflight
		r.host.mu.Unlock()
		if inflight == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d cleanups ran at once", inflight, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	var st api.DaemonStatus
	r.mustCall(api.MethodDaemonStatus, nil, &st)
	if st.VMCounts[api.StateStopping] != n {
		t.Fatalf("status during reconcile: %+v", st.VMCounts)
	}
	var wg sync.WaitGroup
	var stopErr error
	var res api.VMResult
	wg.Add(1)
	go func() { defer wg.Done(); stopErr = r.call(api.MethodVMStop, api.VMStopParams{Ref: "v3"}, &res) }()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		t.Fatalf("vm stop returned while its vm was still being finished: %v %+v", stopErr, res)
	default:
	}
	close(r.host.block)
	<-done
	if stopErr != nil || res.VM.State != api.StateStopped {
		t.Fatalf("vm stop after the reconcile: %v %+v", stopErr, res.VM)
	}
	select {
	case <-r.d.reconciled:
	case <-time.After(20 * time.Second):
		t.Fatal("start-up reconcile did not finish")
	}
	for _, v := range r.vms() {
		if v.State != api.StateStopped {
			t.Errorf("%s: %s", v.Name, v.State)
		}
	}
	if taps := r.host.liveTaps(); len(taps) != 0 {
		t.Fatalf("taps left: %v", taps)
	}
	if r.host.peak != n {
		t.Fatalf("peak concurrent cleanups %d, want %d", r.host.peak, n)
	}
}
