package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"banger/internal/api"
)

func endEvents(evs []api.Event) []api.Event {
	var out []api.Event
	for _, ev := range evs {
		if ev.Kind == api.EventVMProgressEnd {
			out = append(out, ev)
		}
	}
	return out
}

// Every create/start/restart call ends with one vm.progress.end event,
// after its own stages, naming the VM as well as the daemon knows it.
func TestProgressEndEvents(t *testing.T) {
	d := unitDaemon(t)
	vm := addVM(t, d, "ends")
	evs, unsub := d.events.subscribe()
	defer unsub()
	ctx := context.Background()
	call := func(m map[string]handler, method string, params any) error {
		t.Helper()
		raw, _ := json.Marshal(params)
		_, err := m[method](ctx, raw)
		return err
	}

	t.Run("success after stages", func(t *testing.T) {
		res := api.VMResult{VM: api.VM{ID: vm.ID, Name: vm.Name, State: api.StateRunning}}
		m := d.withProgressEnds(map[string]handler{api.MethodVMStart: func(context.Context, json.RawMessage) (any, error) {
			d.progress(&vm, time.Now(), "agent", "healthy")
			return res, nil
		}})
		if err := call(m, api.MethodVMStart, api.VMRef{Ref: vm.ID}); err != nil {
			t.Fatal(err)
		}
		got := drain(evs)
		if len(got) != 2 || got[0].Kind != api.EventVMProgress || got[1].Kind != api.EventVMProgressEnd {
			t.Fatalf("events %+v, want the stage then the end", got)
		}
		if e := got[1]; e.VMID != vm.ID || e.VM == nil || e.VM.Name != "ends" {
			t.Fatalf("end event %+v does not name the vm", e)
		}
	})

	real := d.methods()
	t.Run("failed create names the requested name", func(t *testing.T) {
		if err := call(real, api.MethodVMCreate, api.VMCreateParams{Name: "Not_A_Label"}); err == nil {
			t.Fatal("create of an invalid name succeeded")
		}
		got := endEvents(drain(evs))
		if len(got) != 1 || got[0].Ref != "Not_A_Label" || got[0].VMID != "" {
			t.Fatalf("end events %+v, want one with ref Not_A_Label", got)
		}
	})
	t.Run("failed start of an unknown vm", func(t *testing.T) {
		if err := call(real, api.MethodVMStart, api.VMRef{Ref: "nosuchvm"}); err == nil {
			t.Fatal("start of an unknown vm succeeded")
		}
		got := endEvents(drain(evs))
		if len(got) != 1 || got[0].Ref != "nosuchvm" || got[0].VMID != "" {
			t.Fatalf("end events %+v, want one with ref nosuchvm", got)
		}
	})
	t.Run("failed start of a known vm names it", func(t *testing.T) {
		m := d.withProgressEnds(map[string]handler{api.MethodVMStart: func(context.Context, json.RawMessage) (any, error) {
			return nil, errors.New("no kvm")
		}})
		if err := call(m, api.MethodVMStart, api.VMRef{Ref: "ends"}); err == nil {
			t.Fatal("want the handler's error")
		}
		got := endEvents(drain(evs))
		if len(got) != 1 || got[0].Ref != "ends" || got[0].VMID != vm.ID || got[0].VM.Name != "ends" {
			t.Fatalf("end events %+v, want one naming ends by id and name", got)
		}
	})
}

// The create benchmark keys create's and start's storage stages apart.
func TestStageKey(t *testing.T) {
	for _, c := range []struct {
		stage string
		n     int
		want  string
	}{{"storage", 1, "storage:create"}, {"storage", 2, "storage:start"}, {"agent", 1, "agent"}, {"dns", 2, "dns#2"}} {
		if got := stageKey(c.stage, c.n); got != c.want {
			t.Errorf("stageKey(%q, %d) = %q, want %q", c.stage, c.n, got, c.want)
		}
	}
}
