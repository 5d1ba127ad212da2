package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

func newVM(img Image, name string) VM {
	return VM{
		Name: name, ImageID: img.ID, VCPU: 2, MemoryMiB: 1024,
		DiskBytes: 8 << 30, WorkDiskBytes: 4 << 30, NAT: true,
	}
}

func mustVM(t testing.TB, s *Store, img Image, name string) VM {
	t.Helper()
	vm := newVM(img, name)
	if err := s.CreateVM(context.Background(), &vm, lowestFree); err != nil {
		t.Fatalf("CreateVM(%s): %v", name, err)
	}
	return vm
}

func TestVMRoundTrip(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	clock := time.Date(2025, 6, 1, 12, 0, 0, 123456789, time.UTC)
	s.now = func() time.Time { return clock }
	img := mustImage(t, s, "debian")

	vm := newVM(img, "dev")
	vm.Dir = "/state/vms/dev"
	vm.Storage = json.RawMessage(`{"driver":"dm","root_disk":"/dev/mapper/banger-x","phase":"ready","handles":[{"kind":"loop","name":"/dev/loop3"}]}`)
	vm.Pending = []string{"vcpu"}
	if err := s.CreateVM(ctx, &vm, lowestFree); err != nil {
		t.Fatal(err)
	}
	if vm.State != StateCreated || !validID(vm.ID) || vm.Tap != "bgt-"+vm.ID ||
		vm.IP != netip.MustParseAddr("172.16.0.2") || vm.CID != 3 || vm.MAC != "02:fc:ac:10:00:02" {
		t.Fatalf("CreateVM filled %+v", vm)
	}
	if !vm.CreatedAt.Equal(clock) || !vm.UpdatedAt.Equal(clock) || !vm.StartedAt.IsZero() {
		t.Fatalf("timestamps: created %v updated %v started %v", vm.CreatedAt, vm.UpdatedAt, vm.StartedAt)
	}
	for _, get := range []func() (VM, error){
		func() (VM, error) { return s.GetVM(ctx, vm.ID) },
		func() (VM, error) { return s.GetVMByName(ctx, "dev") },
	} {
		got, err := get()
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, vm) {
			t.Fatalf("read back\n got %+v\nwant %+v", got, vm)
		}
	}

	// UpdateVM writes every mutable column and bumps UpdatedAt; it leaves
	// the allocations alone.
	clock = clock.Add(time.Minute)
	upd := vm
	upd.Name, upd.State, upd.LastError, upd.StopReason = "dev2", StateError, "boom", "guest"
	upd.VCPU, upd.MemoryMiB, upd.DiskBytes, upd.WorkDiskBytes, upd.NAT = 4, 2048, 1, 2, false
	upd.PID, upd.Dir, upd.Pending, upd.Storage = 42, "/d", nil, json.RawMessage(`{"driver":"copy"}`)
	upd.StartedAt = clock.Add(-time.Second)
	upd.LastUsedAt = clock
	upd.IP, upd.CID, upd.MAC, upd.Tap = netip.MustParseAddr("10.9.9.9"), 99, "x", "y"
	if err := s.UpdateVM(ctx, &upd); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetVM(ctx, vm.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := upd
	want.IP, want.CID, want.MAC, want.Tap = vm.IP, vm.CID, vm.MAC, vm.Tap
	want.UpdatedAt = clock
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("after UpdateVM\n got %+v\nwant %+v", got, want)
	}

	clock = clock.Add(time.Minute)
	if err := s.SetState(ctx, vm.ID, StateRunning, ""); err != nil {
		t.Fatal(err)
	}
	st := json.RawMessage(`{"driver":"dm","phase":"setting-up","handles":[{"kind":"dm","name":"banger-` + vm.ID + `","state":"intended"}]}`)
	if err := s.SetStorage(ctx, vm.ID, st); err != nil {
		t.Fatal(err)
	}
	got, err = s.GetVM(ctx, vm.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != StateRunning || got.LastError != "" || !reflect.DeepEqual(got.Storage, st) || !got.UpdatedAt.Equal(clock) {
		t.Fatalf("after SetState/SetStorage: %+v", got)
	}
	if err := s.DeleteVM(ctx, vm.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetVM(ctx, vm.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetVM after delete: %v, want ErrNotFound", err)
	}
}

func TestVMNotFoundAndInvalid(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	img := mustImage(t, s, "debian")
	missing := newVM(img, "ghost")
	missing.ID, missing.State, missing.CreatedAt = "0000000000", StateCreated, time.Now()
	for name, err := range map[string]error{
		"GetVM":       func() error { _, err := s.GetVM(ctx, "0000000000"); return err }(),
		"GetVMByName": func() error { _, err := s.GetVMByName(ctx, "ghost"); return err }(),
		"UpdateVM":    s.UpdateVM(ctx, &missing),
		"SetState":    s.SetState(ctx, "0000000000", StateStopped, ""),
		"SetStorage":  s.SetStorage(ctx, "0000000000", nil),
		"DeleteVM":    s.DeleteVM(ctx, "0000000000"),
	} {
		if !errors.Is(err, ErrNotFound) {
			t.Errorf("%s of a missing vm: %v, want ErrNotFound", name, err)
		}
	}
	vm := mustVM(t, s, img, "dev")
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"SetState unknown", s.SetState(ctx, vm.ID, "hibernating", ""), `unknown state "hibernating"`},
		{"UpdateVM unknown state", func() error { v := vm; v.State = "zombie"; return s.UpdateVM(ctx, &v) }(), `unknown state "zombie"`},
		{"CreateVM bad id", func() error { v := newVM(img, "x"); v.ID = "XYZ"; return s.CreateVM(ctx, &v, lowestFree) }(), `id "XYZ"`},
		{"CreateVM bad state", func() error { v := newVM(img, "x"); v.State = "zombie"; return s.CreateVM(ctx, &v, lowestFree) }(), `unknown state "zombie"`},
		{"CreateVM allocator fails", func() error {
			v := newVM(img, "x")
			return s.CreateVM(ctx, &v, func(Used) (Allocation, error) { return Allocation{}, errors.New("subnet full") })
		}(), "subnet full"},
		{"CreateVM allocator returns a taken ip", func() error {
			v := newVM(img, "x")
			return s.CreateVM(ctx, &v, func(u Used) (Allocation, error) {
				a, _ := lowestFree(u)
				a.IP = vm.IP
				return a, nil
			})
		}(), "ip 172.16.0.2 is already allocated"},
		{"CreateVM allocator returns cid 2", func() error {
			v := newVM(img, "x")
			return s.CreateVM(ctx, &v, func(u Used) (Allocation, error) { a, _ := lowestFree(u); a.CID = 2; return a, nil })
		}(), "cid 2"},
	} {
		if tc.err == nil || !strings.Contains(tc.err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to mention %q", tc.name, tc.err, tc.want)
		}
	}
	if vms, _ := s.ListVMs(ctx); len(vms) != 1 {
		t.Errorf("%d vms after failed creates, want 1", len(vms))
	}
	// Renaming onto a taken name is a conflict.
	other := mustVM(t, s, img, "other")
	other.Name = "dev"
	if err := s.UpdateVM(ctx, &other); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), `"dev"`) {
		t.Errorf("rename onto a taken name: %v, want ErrConflict naming dev", err)
	}
}

func TestConcurrentCreatesAllocateUniquely(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	img := mustImage(t, s, "debian")
	const n = 50
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			vm := newVM(img, fmt.Sprintf("vm%02d", i))
			errs[i] = s.CreateVM(ctx, &vm, lowestFree)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("create vm%02d: %v", i, err)
		}
	}
	vms, err := s.ListVMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(vms) != n {
		t.Fatalf("%d vms, want %d", len(vms), n)
	}
	seen := map[string]map[string]string{"ip": {}, "cid": {}, "mac": {}, "tap": {}, "name": {}, "id": {}}
	for _, vm := range vms {
		for col, v := range map[string]string{"ip": vm.IP.String(), "cid": fmt.Sprint(vm.CID),
			"mac": vm.MAC, "tap": vm.Tap, "name": vm.Name, "id": vm.ID} {
			if prev, ok := seen[col][v]; ok {
				t.Errorf("%s %s given to both %s and %s", col, v, prev, vm.Name)
			}
			seen[col][v] = vm.Name
		}
		if vm.CID < 3 || vm.CID >= 3+n {
			t.Errorf("%s: cid %d outside the lowest %d", vm.Name, vm.CID, n)
		}
		if vm.Tap != "bgt-"+vm.ID {
			t.Errorf("%s: tap %q", vm.Name, vm.Tap)
		}
	}
	// The lowest-free allocator must have packed the range: .2 .. .51.
	for i := range n {
		ip := netip.AddrFrom4([4]byte{172, 16, 0, byte(2 + i)}).String()
		if _, ok := seen["ip"][ip]; !ok {
			t.Errorf("ip %s was not allocated", ip)
		}
	}
	// A freed allocation is reused.
	if err := s.DeleteVM(ctx, vms[10].ID); err != nil {
		t.Fatal(err)
	}
	again := mustVM(t, s, img, "again")
	if again.IP != vms[10].IP || again.CID != vms[10].CID {
		t.Errorf("after freeing %s/%d got %s/%d", vms[10].IP, vms[10].CID, again.IP, again.CID)
	}
}

func TestConcurrentCreatesSameName(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	img := mustImage(t, s, "debian")
	const n = 20
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			vm := newVM(img, "dev")
			errs[i] = s.CreateVM(ctx, &vm, lowestFree)
		})
	}
	wg.Wait()
	wins := 0
	for _, err := range errs {
		switch {
		case err == nil:
			wins++
		case errors.Is(err, ErrConflict) && strings.Contains(err.Error(), `"dev"`):
		default:
			t.Errorf("create: %v, want nil or ErrConflict naming dev", err)
		}
	}
	if wins != 1 {
		t.Errorf("%d creates of dev succeeded, want exactly 1", wins)
	}
	if vms, _ := s.ListVMs(ctx); len(vms) != 1 {
		t.Errorf("%d vms, want 1", len(vms))
	}
}

func TestUniqueConstraintsMapToConflict(t *testing.T) {
	// Bypass CreateVM's own checks to prove the schema enforces each
	// allocation and that the error mapping names the column.
	ctx := context.Background()
	s := openTest(t)
	img := mustImage(t, s, "debian")
	vm := mustVM(t, s, img, "dev")
	for _, col := range []string{"name", "ip", "mac", "tap", "cid", "id"} {
		t.Run(col, func(t *testing.T) {
			v := newVM(img, "fresh")
			v.ID, v.State, v.CreatedAt = NewID(), StateCreated, time.Now()
			v.IP, v.MAC, v.Tap, v.CID = netip.MustParseAddr("172.16.0.200"), "fresh-mac", "bgt-fresh", 200
			switch col {
			case "name":
				v.Name = vm.Name
			case "ip":
				v.IP = vm.IP
			case "mac":
				v.MAC = vm.MAC
			case "tap":
				v.Tap = vm.Tap
			case "cid":
				v.CID = vm.CID
			case "id":
				v.ID = vm.ID
			}
			w, err := encodeVM(&v, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			_, err = s.DB().ExecContext(ctx, `INSERT INTO vms (`+vmColumns+`)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
				v.ID, v.Name, v.ImageID, v.State, "", "", 1, 1, 0, 0, 0, v.IP.String(), v.MAC, v.Tap,
				int64(v.CID), 0, "", w.storage, w.pending, w.created, w.updated, w.started, w.lastUsed)
			err = vmWriteErr("creating", &v, err)
			if !errors.Is(err, ErrConflict) {
				t.Fatalf("duplicate %s: %v, want ErrConflict", col, err)
			}
			if !strings.Contains(err.Error(), col) {
				t.Errorf("duplicate %s: %q does not name the column", col, err)
			}
		})
	}
}

func TestCountVMsByState(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	img := mustImage(t, s, "debian")
	if got, err := s.CountVMsByState(ctx); err != nil || len(got) != 0 {
		t.Fatalf("empty store: %v, %v", got, err)
	}
	for i, state := range []string{StateRunning, StateRunning, StateStopped, StateCreated, StateRunning} {
		vm := mustVM(t, s, img, fmt.Sprintf("vm%d", i))
		if err := s.SetState(ctx, vm.ID, state, ""); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.CountVMsByState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{StateRunning: 3, StateStopped: 1, StateCreated: 1}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("counts = %v, want %v", got, want)
	}
}

func TestListVMsOrder(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	img := mustImage(t, s, "debian")
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, v := range []struct {
		name string
		at   time.Duration
	}{{"c", 0}, {"b", time.Second}, {"a", time.Second}, {"z", -time.Second}} {
		vm := newVM(img, v.name)
		vm.CreatedAt = base.Add(v.at)
		if err := s.CreateVM(ctx, &vm, lowestFree); err != nil {
			t.Fatal(err)
		}
	}
	vms, err := s.ListVMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, vm := range vms {
		names = append(names, vm.Name)
	}
	if got := strings.Join(names, ","); got != "z,c,a,b" {
		t.Errorf("order = %s, want z,c,a,b", got)
	}
}

func TestDecodeFailures(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name, column, set, wantErr string
	}{
		{"corrupt storage json", "storage", `storage = '{"driver": "dm", '`, "invalid JSON"},
		{"storage json null", "storage", `storage = 'null'`, "want a JSON object"},
		{"storage not an object", "storage", `storage = '["loop"]'`, "want a JSON object"},
		{"storage trailing data", "storage", `storage = '{} {}'`, "trailing data"},
		{"pending not an array", "pending", `pending = '{"a":1}'`, "invalid JSON"},
		{"unknown state", "state", `state = 'hibernating'`, `unknown state "hibernating"`},
		{"empty state", "state", `state = ''`, `unknown state ""`},
		{"bad ip", "ip", `ip = '172.16.0.300'`, "172.16.0.300"},
		{"empty ip", "ip", `ip = ''`, "ParseAddr"},
		// The schema itself refuses these, so they can never reach the decoder.
		{"nat not boolean", "nat", `nat = 2`, ""},
		{"cid below 3", "cid", `cid = 2`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openTest(t)
			img := mustImage(t, s, "debian")
			good := mustVM(t, s, img, "good")
			bad := mustVM(t, s, img, "broken")
			_, err := s.DB().ExecContext(ctx, `UPDATE vms SET `+tc.set+` WHERE id = ?`, bad.ID)
			if tc.wantErr == "" {
				if err == nil {
					t.Fatalf("schema accepted %s", tc.set)
				}
				return
			}
			if err != nil {
				t.Fatalf("corrupting: %v", err)
			}
			check := func(what string, err error) {
				t.Helper()
				var de *DecodeError
				if !errors.As(err, &de) {
					t.Fatalf("%s: err = %v (%T), want *DecodeError", what, err, err)
				}
				if de.VM != "broken" || de.Column != tc.column {
					t.Errorf("%s: DecodeError{VM: %q, Column: %q}, want broken/%s", what, de.VM, de.Column, tc.column)
				}
				msg := err.Error()
				if !strings.Contains(msg, fmt.Sprintf("decoding vm broken: column %q: ", tc.column)) || !strings.Contains(msg, tc.wantErr) {
					t.Errorf("%s: message %q", what, msg)
				}
			}
			_, err = s.GetVM(ctx, bad.ID)
			check("GetVM", err)
			_, err = s.GetVMByName(ctx, "broken")
			check("GetVMByName", err)
			vms, err := s.ListVMs(ctx)
			check("ListVMs", err)
			if vms != nil {
				t.Errorf("ListVMs returned %d vms alongside the error", len(vms))
			}
			if _, err := s.GetVM(ctx, good.ID); err != nil {
				t.Errorf("GetVM of the intact vm: %v", err)
			}
			if tc.column == "state" {
				_, err := s.CountVMsByState(ctx)
				check("CountVMsByState", err)
			}
			if tc.column == "ip" {
				v := newVM(img, "third")
				check("CreateVM", s.CreateVM(ctx, &v, lowestFree))
			}
		})
	}
}

func BenchmarkListVMs500(b *testing.B) {
	ctx := context.Background()
	s := openTest(b)
	img := mustImage(b, s, "debian")
	prefix := netip.MustParsePrefix("172.16.0.0/16")
	alloc := func(u Used) (Allocation, error) {
		ip := prefix.Addr().Next().Next()
		for u.IPs[ip] {
			ip = ip.Next()
		}
		b := ip.As4()
		return Allocation{IP: ip, CID: uint32(len(u.CIDs) + 3),
			MAC: fmt.Sprintf("02:fc:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3])}, nil
	}
	for i := range 500 {
		vm := newVM(img, fmt.Sprintf("vm%03d", i))
		vm.Storage = json.RawMessage(`{"driver":"dm","root_disk":"/dev/mapper/banger-` + vm.Name + `","phase":"ready",` +
			`"handles":[{"kind":"loop","name":"/dev/loop1","role":"image","state":"done"},` +
			`{"kind":"loop","name":"/dev/loop2","role":"cow","state":"done"},` +
			`{"kind":"dm","name":"banger-` + vm.Name + `","role":"snapshot","state":"done"}]}`)
		if err := s.CreateVM(ctx, &vm, alloc); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		vms, err := s.ListVMs(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if len(vms) != 500 {
			b.Fatalf("%d vms", len(vms))
		}
	}
}
