package cli

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/client"
)

// oldListDaemon answers vm.list as a daemon older than its table view does:
// params are refused as invalid, and the reply without them is the full
// list. calls counts the vm.list calls it saw.
func oldListDaemon(t *testing.T, vms []api.VM, calls *int) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "d.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req api.Request
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Method != api.MethodVMList {
			http.Error(w, "unexpected request", http.StatusBadRequest)
			return
		}
		*calls++
		resp := map[string]any{"jsonrpc": "2.0", "id": req.ID}
		if len(req.Params) > 0 && string(req.Params) != "null" {
			resp["error"] = api.Error{Code: api.CodeInvalidParams, Message: `invalid params for vm.list: json: unknown field "table"`, Data: api.ErrorData{Kind: api.KindInvalid}}
		} else {
			resp["result"] = api.VMList{VMs: vms}
		}
		json.NewEncoder(w).Encode(resp)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return sock
}

// A CLI newer than the daemon still lists: the table view's refusal is
// answered by asking for the full list, read into the same rows.
func TestListTableFromOlderDaemon(t *testing.T) {
	created := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	vms := []api.VM{{ID: "id1", Name: "dev", State: api.StateRunning, Image: "debian", VCPU: 2, MemoryMiB: 1024,
		DiskBytes: 4 << 30, WorkDiskBytes: 8 << 30, NAT: true, IP: "172.16.0.2", CreatedAt: created,
		MAC: "02:00:00:00:00:01", Tap: "tap0", Dir: "/state/vms/id1"}}
	calls := 0
	cl := client.New(oldListDaemon(t, vms, &calls))
	rows, err := listTable(context.Background(), cl)
	if err != nil {
		t.Fatal(err)
	}
	want := api.VMRow{ID: "id1", Name: "dev", State: api.StateRunning, Image: "debian", VCPU: 2, MemoryMiB: 1024,
		DiskBytes: 4 << 30, WorkDiskBytes: 8 << 30, NAT: true, IP: "172.16.0.2", CreatedAt: created}
	if calls != 2 || len(rows) != 1 || rows[0] != want {
		t.Fatalf("after %d calls: rows %+v, want [%+v]", calls, rows, want)
	}
}
