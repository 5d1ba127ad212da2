package daemon

import (
	"context"
	"encoding/json"
	"net/netip"
	"strconv"
	"testing"
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
