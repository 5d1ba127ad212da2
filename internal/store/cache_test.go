package store

import (
	"context"
	"encoding/json"
	"testing"
)

// TestListCacheFollowsWrites: the cached list changes with every kind of
// write, and callers cannot corrupt it through what they were given.
func TestListCacheFollowsWrites(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	img := mustImage(t, s, "debian")
	a := mustVM(t, s, img, "a")
	list := func() []VM {
		t.Helper()
		vms, err := s.ListVMs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return vms
	}
	if got := list(); len(got) != 1 {
		t.Fatalf("list: %v", got)
	}
	mustVM(t, s, img, "b")
	if got := list(); len(got) != 2 {
		t.Fatalf("after create: %d vms", len(got))
	}
	a.State = StateRunning
	a.Pending = []string{"vcpu"}
	if err := s.UpdateVM(ctx, &a); err != nil {
		t.Fatal(err)
	}
	got := list()
	if got[0].State != StateRunning || len(got[0].Pending) != 1 {
		t.Fatalf("after update: %+v", got[0])
	}
	got[0].Pending[0] = "mutated"
	got[0].Name = "mutated"
	if again := list(); again[0].Pending[0] != "vcpu" || again[0].Name != "a" {
		t.Fatalf("cache shared with a caller: %+v", again[0])
	}
	if err := s.SetState(ctx, a.ID, StateStopped, "boom"); err != nil {
		t.Fatal(err)
	}
	if got := list(); got[0].State != StateStopped || got[0].LastError != "boom" {
		t.Fatalf("after SetState: %+v", got[0])
	}
	if err := s.SetStorage(ctx, a.ID, json.RawMessage(`{"driver":"copy"}`)); err != nil {
		t.Fatal(err)
	}
	if got := list(); string(got[0].Storage) != `{"driver":"copy"}` {
		t.Fatalf("after SetStorage: %+v", got[0].Storage)
	}
	if err := s.DeleteVM(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if got := list(); len(got) != 1 || got[0].Name != "b" {
		t.Fatalf("after delete: %v", got)
	}
}

// TestListVMsWhere: the filter applies on a fresh read and on the cached
// list alike, keeps the order, and what it returns is the caller's own.
func TestListVMsWhere(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	img := mustImage(t, s, "debian")
	for _, n := range []string{"a", "b", "c"} {
		mustVM(t, s, img, n)
	}
	b, err := s.GetVMByName(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetState(ctx, b.ID, StateRunning, ""); err != nil {
		t.Fatal(err)
	}
	notA := func(v *VM) bool { return v.Name != "a" }
	for _, round := range []string{"fresh read", "cached"} {
		got, err := s.ListVMsWhere(ctx, notA)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[0].Name != "b" || got[1].Name != "c" {
			t.Fatalf("%s: %+v", round, got)
		}
		got[0].Name = "mutated"
	}
	running, err := s.ListVMsWhere(ctx, func(v *VM) bool { return v.State == StateRunning })
	if err != nil || len(running) != 1 || running[0].Name != "b" {
		t.Fatalf("running: %+v, %v", running, err)
	}
	if all, err := s.ListVMs(ctx); err != nil || len(all) != 3 || all[1].Name != "b" {
		t.Fatalf("the cache was changed through a filtered list: %+v, %v", all, err)
	}
}
