package store

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

// TestIntentWithStateChange: an intent and the VM change it guards commit
// together, and a failure inside the transaction records neither.
func TestIntentWithStateChange(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	img := mustImage(t, s, "debian")
	vm := newVM(img, "dev")
	vm.ID = NewID() // values are filled at commit, so the caller names the vm
	in := Intent{VMID: vm.ID, Op: "create", Data: json.RawMessage(`{"dir":"/x"}`)}
	if err := s.Write(ctx, func(tx *Tx) error {
		if err := tx.CreateVM(&vm, lowestFree); err != nil {
			return err
		}
		return tx.BeginIntent(&in)
	}); err != nil {
		t.Fatal(err)
	}
	if in.ID == 0 || in.StartedAt.IsZero() || vm.Tap == "" {
		t.Fatalf("not filled after commit: intent %+v vm id %q", in, vm.ID)
	}
	got, err := s.ListIntents(ctx)
	if err != nil || len(got) != 1 || !reflect.DeepEqual(got[0], in) {
		t.Fatalf("ListIntents = %+v, %v; want [%+v]", got, err, in)
	}

	// A failing step rolls the whole transaction back.
	before := vm
	vm.State = StateStarting
	start := Intent{VMID: vm.ID, Op: "start"}
	boom := errors.New("boom")
	err = s.Write(ctx, func(tx *Tx) error {
		if err := tx.UpdateVM(&vm); err != nil {
			return err
		}
		if err := tx.BeginIntent(&start); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Write = %v, want boom", err)
	}
	if start.ID != 0 {
		t.Fatalf("intent filled although the transaction rolled back: %+v", start)
	}
	if cur, _ := s.GetVM(ctx, vm.ID); cur.State != before.State {
		t.Fatalf("state written by a rolled back transaction: %s", cur.State)
	}
	if got, _ := s.VMIntents(ctx, vm.ID); len(got) != 1 {
		t.Fatalf("intents after rollback: %+v", got)
	}

	// End with the final state change.
	vm.State = StateStopped
	if err := s.Write(ctx, func(tx *Tx) error {
		if err := tx.UpdateVM(&vm); err != nil {
			return err
		}
		return tx.EndIntent(in.ID)
	}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.ListIntents(ctx); len(got) != 0 {
		t.Fatalf("intents after end: %+v", got)
	}
	if err := s.EndIntent(ctx, in.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("ending a gone intent: %v", err)
	}

	// DeleteVM drops the VM's intents with it, and only its.
	other := mustVM(t, s, img, "other")
	for _, x := range []*Intent{{VMID: vm.ID, Op: "delete"}, {VMID: vm.ID, Op: "stop"}, {VMID: other.ID, Op: "stop"}, {ImageID: img.ID, Op: "image-delete"}} {
		if err := s.BeginIntent(ctx, x); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeleteVM(ctx, vm.ID); err != nil {
		t.Fatal(err)
	}
	got, _ = s.ListIntents(ctx)
	if len(got) != 2 || got[0].VMID != other.ID || got[1].ImageID != img.ID {
		t.Fatalf("intents after DeleteVM: %+v", got)
	}
}

func TestIntentValidation(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	for name, in := range map[string]*Intent{
		"nil":          nil,
		"no op":        {VMID: "0123456789"},
		"no subject":   {Op: "x"},
		"two subjects": {Op: "x", VMID: "0123456789", ImageID: "0123456789"},
		"bad data":     {Op: "x", VMID: "0123456789", Data: json.RawMessage(`{`)},
	} {
		if err := s.BeginIntent(ctx, in); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// The schema refuses a row with neither or both subjects, too.
	if _, err := s.DB().Exec(`INSERT INTO intents (vm_id, image_id, op, started_at) VALUES ('', '', 'x', 1)`); err == nil {
		t.Error("schema accepted an intent with no subject")
	}
}

// TestFailWrites: the hook fails exactly the chosen writes, before
// anything is written, and reads are untouched.
func TestFailWrites(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	img := mustImage(t, s, "debian")
	vm := mustVM(t, s, img, "dev")
	attempts := s.FailWrites(1, 2)
	vm.State = StateStopped
	errs := []error{
		s.UpdateVM(ctx, &vm),                              // 1: passes
		s.SetState(ctx, vm.ID, StateError, "x"),           // 2: fails
		s.DeleteVM(ctx, vm.ID),                            // 3: fails
		s.BeginIntent(ctx, &Intent{VMID: vm.ID, Op: "y"}), // 4: passes
	}
	if errs[0] != nil || !errors.Is(errs[1], ErrInjected) || !errors.Is(errs[2], ErrInjected) || errs[3] != nil {
		t.Fatalf("errors = %v", errs)
	}
	if n := attempts(); n != 4 {
		t.Fatalf("attempts = %d", n)
	}
	cur, err := s.GetVM(ctx, vm.ID)
	if err != nil || cur.State != StateStopped || cur.LastError != "" {
		t.Fatalf("after failed writes: %+v %v", cur, err)
	}
	s.SetWriteHook(nil)
	if err := s.DeleteVM(ctx, vm.ID); err != nil {
		t.Fatalf("after removing the hook: %v", err)
	}
}
