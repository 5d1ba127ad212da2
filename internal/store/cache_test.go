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
