package daemon

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/firecracker"
	"banger/internal/network"
	"banger/internal/storage"
	"banger/internal/store"
)

func validName(name string) error {
	if !api.ValidName(name) {
		return invalidf("vm name %q is not a DNS label: use 1-63 lowercase letters, digits and inner hyphens", name)
	}
	return nil
}

// hostMemMiB reads MemTotal.
func hostMemMiB() int {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	var kb int
	if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kb); err != nil {
		return 0
	}
	return kb / 1024
}

func adjNoun() string {
	adjs := []string{"brisk", "calm", "eager", "fuzzy", "gentle", "happy", "jolly", "keen", "lucky", "mellow", "nimble", "proud", "quick", "quiet", "rapid", "sunny", "tidy", "vivid", "witty", "zesty"}
	nouns := []string{"otter", "falcon", "badger", "lynx", "heron", "panda", "koala", "gecko", "raven", "bison", "marten", "puffin", "walrus", "yak", "newt", "tapir", "ibis", "okapi", "quokka", "dingo"}
	pick := func(n int) int {
		v, err := rand.Int(rand.Reader, big.NewInt(int64(n)))
		if err != nil {
			return 0
		}
		return int(v.Int64())
	}
	return adjs[pick(len(adjs))] + "-" + nouns[pick(len(nouns))]
}

// createSpec is a validated vm.create request.
type createSpec struct {
	name      string
	image     store.Image
	vcpu      int
	memMiB    int
	diskBytes int64
	workBytes int64
	nat       bool
	noStart   bool
	publish   []store.Published // VMID filled in at create
}

func (d *Daemon) validateCreate(ctx context.Context, p api.VMCreateParams) (createSpec, error) {
	s := createSpec{name: p.Name, nat: p.NAT, noStart: p.NoStart}
	if s.name == "" {
		for range 20 {
			s.name = adjNoun()
			if _, err := d.store.GetVMByName(ctx, s.name); errors.Is(err, store.ErrNotFound) {
				break
			}
		}
	}
	if err := validName(s.name); err != nil {
		return s, err
	}
	var err error
	if s.publish, err = parsePublished("", p.Publish); err != nil {
		return s, err
	}
	s.vcpu = d.cfg.DefaultVCPU
	if p.VCPU != nil {
		s.vcpu = *p.VCPU
	}
	if s.vcpu < 1 || s.vcpu > 32 {
		return s, invalidf("vcpu %d is out of range; use 1 to 32", s.vcpu)
	}
	s.memMiB = d.cfg.DefaultMemoryMiB
	if p.MemoryMiB != nil {
		s.memMiB = *p.MemoryMiB
	}
	if s.memMiB < 128 {
		return s, invalidf("memory %d MiB is too small; use at least 128", s.memMiB)
	}
	if host := hostMemMiB(); host > 0 && s.memMiB >= host {
		return s, invalidf("memory %d MiB is not below this host's %d MiB", s.memMiB, host)
	}
	s.diskBytes = d.cfg.DefaultDiskSize
	if p.DiskSize != "" {
		if s.diskBytes, err = config.ParseSize(p.DiskSize); err != nil {
			return s, invalidf("disk size %q: %v", p.DiskSize, err)
		}
	}
	s.workBytes = d.cfg.DefaultWorkDiskSize
	if p.WorkDiskSize != "" {
		if s.workBytes, err = config.ParseSize(p.WorkDiskSize); err != nil {
			return s, invalidf("work disk size %q: %v", p.WorkDiskSize, err)
		}
	}
	imgName := p.Image
	if imgName == "" {
		imgName = d.cfg.DefaultImageName
	}
	s.image, err = d.store.GetImageByName(ctx, imgName)
	if errors.Is(err, store.ErrNotFound) {
		return s, invalidf("image %q does not exist; see `banger image list`, or build it with `banger image build debian`", imgName)
	} else if err != nil {
		return s, err
	}
	if s.image.SizeBytes > s.diskBytes {
		return s, invalidf("disk size %s is smaller than image %s (%s); use --disk-size %s or more",
			config.FormatSize(s.diskBytes), s.image.Name, config.FormatSize(s.image.SizeBytes), config.FormatSize(s.image.SizeBytes))
	}
	// Refused here, before anything is allocated, rather than by storage.
	for _, sz := range []struct {
		what, flag string
		n          int64
	}{{"disk size", "--disk-size", s.diskBytes}, {"work disk size", "--work-disk-size", s.workBytes}} {
		if sz.n%4096 != 0 {
			return s, invalidf("%s %d bytes is not a multiple of 4 KiB; use %s %s", sz.what, sz.n, sz.flag, flagSize((sz.n+4095)/4096*4096))
		}
	}
	seed, err := d.storage.SeedBytes(ctx, s.image.ID, s.image.RootfsPath)
	if err != nil {
		return s, fmt.Errorf("sizing the work disk of image %s: %w", s.image.Name, err)
	}
	if s.workBytes < seed {
		return s, invalidf("work disk size %s is smaller than image %s's /root (%s); use --work-disk-size %s or more",
			config.FormatSize(s.workBytes), s.image.Name, config.FormatSize(seed), flagSize((seed+1<<20-1)>>20<<20))
	}
	if _, err := d.store.GetVMByName(ctx, s.name); err == nil {
		return s, withKind(ErrConflict, "a vm named %q already exists", s.name)
	}
	return s, nil
}

// flagSize writes n exactly, for a command line: "64MiB", "32772KiB".
func flagSize(n int64) string {
	for _, u := range []struct {
		name string
		mult int64
	}{{"GiB", config.GiB}, {"MiB", config.MiB}, {"KiB", config.KiB}} {
		if n%u.mult == 0 {
			return fmt.Sprintf("%d%s", n/u.mult, u.name)
		}
	}
	return fmt.Sprint(n)
}

// addressesLow warns, while there is still room, that the guest subnet is
// running out (the default /24 holds 253 VMs): at most 5% or 8 addresses
// left, whichever is more.
func (d *Daemon) addressesLow(ctx context.Context) string {
	capacity := network.Capacity(d.cfg.CIDR, d.cfg.BridgeIP)
	counts, err := d.store.CountVMsByState(ctx)
	if err != nil {
		d.log.Warn("counting vms for the address check", "err", err)
		return ""
	}
	used := 0
	for _, n := range counts {
		used += n
	}
	left := capacity - used
	if left > max(8, capacity/20) {
		return ""
	}
	wider := d.cfg.CIDR.Masked()
	if wider.Bits() > 2 {
		wider = netip.PrefixFrom(wider.Addr(), wider.Bits()-2).Masked()
	}
	return fmt.Sprintf("warning: %d of %d guest addresses left in cidr %s; before they run out, widen `cidr` in %s (for example cidr = %q, which holds %d) and restart the daemon",
		max(left, 0), capacity, d.cfg.CIDR.Masked(), d.paths.ConfigFile, wider, network.Capacity(wider, d.cfg.BridgeIP))
}

// alloc picks the lowest free guest address, CID and the MAC derived from
// the address; the store calls it inside its create transaction.
func (d *Daemon) alloc(used store.Used) (store.Allocation, error) {
	ip, err := network.NextFree(d.cfg.CIDR, d.cfg.BridgeIP, used.IPs)
	if err != nil {
		return store.Allocation{}, withKind(ErrUnavailable, "no free guest address in %s: %v", d.cfg.CIDR, err)
	}
	cid := uint32(3)
	for used.CIDs[cid] {
		cid++
	}
	return store.Allocation{IP: ip, MAC: network.MACFor(ip), CID: cid}, nil
}

// diskOf is the VM's storage as the storage package takes it. A VM whose
// image is gone still has its disks released and removed (the recorded
// state names every host object); only a start needs the image.
func (d *Daemon) diskOf(ctx context.Context, vm *store.VM) (storage.Disk, error) {
	st, err := vmStorage(vm)
	if err != nil {
		return storage.Disk{}, err
	}
	disk := storage.Disk{VMID: vm.ID, VMDir: vm.Dir, ImageID: vm.ImageID, DiskBytes: vm.DiskBytes, State: st}
	img, err := d.store.GetImage(ctx, vm.ImageID)
	switch {
	case err == nil:
		disk.ImagePath = img.RootfsPath
	case errors.Is(err, store.ErrNotFound):
		d.log.Warn("image of vm is gone; using its recorded storage state", "vm", vm.Name, "image", vm.ImageID)
	default:
		d.log.Error("reading image of vm; using its recorded storage state", "vm", vm.Name, "image", vm.ImageID, "err", err)
	}
	return disk, nil
}

func (d *Daemon) rpcCreate(ctx context.Context, raw json.RawMessage) (any, error) {
	var p api.VMCreateParams
	if err := decodeParams(api.MethodVMCreate, raw, &p); err != nil {
		return nil, err
	}
	t0 := time.Now()
	spec, err := d.validateCreate(ctx, p)
	if err != nil {
		return nil, err
	}
	if !spec.noStart {
		if err := d.preflightStart(ctx); err != nil {
			return nil, err
		}
	}
	id := store.NewID()
	unlock := d.locks.lock(id)
	defer unlock()
	vm := store.VM{
		ID: id, Name: spec.name, ImageID: spec.image.ID, State: api.StateCreated,
		VCPU: spec.vcpu, MemoryMiB: spec.memMiB, DiskBytes: spec.diskBytes, WorkDiskBytes: spec.workBytes,
		NAT: spec.nat, Dir: filepath.Join(d.paths.VMsDir, id),
	}
	for _, sock := range []string{apiSock(&vm), vsockPath(&vm)} {
		if err := firecracker.CheckSocketPath(sock); err != nil {
			return nil, invalidf("%v", err)
		}
	}
	// The row, its allocations and the create intent commit together: a
	// daemon killed anywhere below leaves an intent that recovery undoes.
	in := &store.Intent{VMID: id, Op: opCreate}
	if err := d.store.Write(ctx, func(tx *store.Tx) error {
		if err := tx.CreateVM(&vm, d.alloc); err != nil {
			return err
		}
		for i := range spec.publish {
			spec.publish[i].VMID = id
		}
		if err := publishTx(tx, spec.publish); err != nil {
			return err
		}
		return tx.BeginIntent(in)
	}); err != nil {
		if pc := (*publishConflict)(nil); errors.As(err, &pc) {
			return nil, withKind(ErrConflict, "vm %s not created: %v", spec.name, pc)
		}
		if errors.Is(err, store.ErrConflict) {
			return nil, withKind(ErrConflict, "a vm named %q already exists", spec.name)
		}
		return nil, fmt.Errorf("recording vm %s: %w", spec.name, err)
	}
	rv := newReverter(d.log)
	defer rv.fail()
	rv.add("remove vm disks and row", func(ctx context.Context) error {
		// When this fails too (a store that fails writes), the intent
		// stays and recovery finishes the undo.
		return d.undoCreate(ctx, &vm)
	})
	// A new VM may reuse an old one's name or address: its host keys are new.
	d.forgetKnownHosts(vm.Name, vm.IP.String())
	d.progress(&vm, t0, "allocate", fmt.Sprintf("ip %s, cid %d", vm.IP, vm.CID))
	if err := os.MkdirAll(d.paths.VMsDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating %s: %w", d.paths.VMsDir, err)
	}
	if err := os.Mkdir(vm.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating vm directory %s: %w", vm.Dir, err)
	}
	disk := storage.Disk{VMID: vm.ID, VMDir: vm.Dir, ImagePath: spec.image.RootfsPath, ImageID: spec.image.ID, DiskBytes: vm.DiskBytes}
	st, made, err := d.storage.CreateRoot(ctx, disk)
	if err != nil {
		return nil, fmt.Errorf("creating root disk for vm %s: %w", vm.Name, err)
	}
	if err := d.storage.CreateWorkDisk(ctx, spec.image.ID, spec.image.RootfsPath, workDisk(&vm), vm.WorkDiskBytes); err != nil {
		return nil, fmt.Errorf("creating work disk for vm %s: %w", vm.Name, err)
	}
	st.WorkDisk = workDisk(&vm)
	if err := setStorage(&vm, st); err != nil {
		return nil, err
	}
	if err := d.end(ctx, &vm, in); err != nil {
		return nil, fmt.Errorf("recording disks of vm %s: %w", vm.Name, err)
	}
	d.progress(&vm, t0, "storage", "root disk: "+made.String()+"; work disk ready")
	rv.success()
	res := api.VMResult{}
	if !spec.noStart {
		health, notices, err := d.startLocked(ctx, &vm, t0)
		if err != nil {
			return nil, fmt.Errorf("%w (vm %s was created but is stopped: fix the cause and run `banger vm start %s`, or delete it)", err, vm.Name, vm.Name)
		}
		res.Health = health
		res.Notices = notices
	}
	if p := d.dnsProblem(); p != "" {
		res.Notices = append(res.Notices, "warning: dns: "+strings.ReplaceAll(p, "NAME.vm", vm.Name+".vm"))
	}
	if w := d.addressesLow(ctx); w != "" {
		res.Notices = append(res.Notices, w)
	}
	res.VM = d.toAPI(ctx, vm)
	return res, nil
}
