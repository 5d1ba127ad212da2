package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"reflect"
	"strconv"
	"testing"
	"time"

	"banger/internal/api"
)

// BenchmarkRPCList500 is the daemon's side of `vm list` with 500 VMs: the
// handler and the encoding of its reply.
// Run: go test -run '^$' -bench RPCList500 ./internal/daemon/
func BenchmarkRPCList500(b *testing.B) {
	d := unitDaemon(b)
	d.cfg.CIDR = netip.MustParsePrefix("172.16.0.0/22") // 500 VMs
	for i := range 500 {
		addVM(b, d, "b"+strconv.Itoa(i))
	}
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		res, err := d.rpcList(ctx, nil)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := json.Marshal(res); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRPCListTable500 is the same with {table: true}, vm list's view.
func BenchmarkRPCListTable500(b *testing.B) {
	d := unitDaemon(b)
	d.cfg.CIDR = netip.MustParsePrefix("172.16.0.0/22")
	for i := range 500 {
		addVM(b, d, "b"+strconv.Itoa(i))
	}
	ctx := context.Background()
	params := json.RawMessage(`{"table":true}`)
	b.ResetTimer()
	for b.Loop() {
		res, err := d.rpcList(ctx, params)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := json.Marshal(res); err != nil {
			b.Fatal(err)
		}
	}
}

// TestRPCListTable: every row of the table view holds what the full view
// says in the members of the same names, for a running, a stopped (with a
// last use) and a suspended VM, and an unknown param is refused as invalid.
func TestRPCListTable(t *testing.T) {
	d := unitDaemon(t)
	ctx := context.Background()
	for _, name := range []string{"a", "b", "c"} {
		addVM(t, d, name)
	}
	vms, err := d.store.ListVMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i, state := range []string{api.StateRunning, api.StateStopped, api.StateSuspended} {
		v := vms[i]
		v.State, v.NAT, v.VCPU = state, i == 0, i+1
		v.LastUsedAt = time.Now().Add(-time.Duration(i) * time.Hour).Truncate(time.Second)
		if err := d.store.UpdateVM(ctx, &v); err != nil {
			t.Fatal(err)
		}
	}
	full, err := d.rpcList(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	table, err := d.rpcList(ctx, json.RawMessage(`{"table":true}`))
	if err != nil {
		t.Fatal(err)
	}
	// The full view read through VMRow is what the table view must say.
	var fromFull, got api.VMTable
	for _, c := range []struct {
		in  any
		out *api.VMTable
	}{{full, &fromFull}, {table, &got}} {
		in, out := c.in, c.out
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatal(err)
		}
	}
	if len(got.VMs) != 3 || !reflect.DeepEqual(got, fromFull) {
		t.Fatalf("table view:\n%+v\nfull view's same members:\n%+v", got, fromFull)
	}
	if got.VMs[2].Snapshot == nil || got.VMs[0].Image != "img" || !got.VMs[0].NAT {
		t.Fatalf("table view lacks the snapshot, image name or NAT: %+v", got.VMs)
	}
	_, err = d.rpcList(ctx, json.RawMessage(`{"tabel":true}`))
	var pe *paramsError
	if !errors.As(err, &pe) {
		t.Fatalf("unknown param: %v, want a params error", err)
	}
}
