//go:build system

package test

import (
	"strings"
	"testing"
	"time"
)

func poolTaps(taps []string) []string {
	var out []string
	for _, t := range taps {
		if strings.HasPrefix(t, "bgt-p") {
			out = append(out, t)
		}
	}
	return out
}

// TestTapPool: with tap_pool_size set, the daemon keeps that many taps
// ready, a start takes one (renamed to the VM's tap) and the pool refills;
// turning the pool off removes the pool's taps at the next daemon start.
func TestTapPool(t *testing.T) {
	e := newEnv(t, "tap_pool_size = 2\n")
	e.registerImage()
	waitPool := func(n int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if len(poolTaps(e.taps())) == n {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("pool taps %v, want %d", poolTaps(e.taps()), n)
	}
	waitPool(2)
	before := poolTaps(e.taps())
	e.ok("vm", "create", "pooled")
	v := e.vm("pooled")
	waitPool(2)
	after := poolTaps(e.taps())
	reused := 0
	for _, b := range before {
		if !strings.Contains(strings.Join(after, " "), b) {
			reused++
		}
	}
	if reused != 1 || !strings.Contains(strings.Join(e.taps(), " "), v.Tap) {
		t.Fatalf("pool before %v after %v, vm tap %s in %v", before, after, v.Tap, e.taps())
	}
	e.ok("vm", "delete", "pooled")
	e.ok("daemon", "stop")

	// Pool off: the next daemon removes the leftover pool taps.
	e.extra = []string{"BANGER_TAP_POOL_SIZE=0"}
	e.ok("daemon", "start")
	waitPool(0)
	e.assertClean()
}
