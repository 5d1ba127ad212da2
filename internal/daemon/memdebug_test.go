package daemon

import (
	"runtime"
	"testing"
)

// Heap profiling is off unless BANGERD_MEMPROFILERATE asks for it.
func TestSetMemProfileRate(t *testing.T) {
	prev := runtime.MemProfileRate
	t.Cleanup(func() { runtime.MemProfileRate = prev })
	for _, c := range []struct {
		env  string
		want int
	}{
		{"", 0},
		{"524288", 524288},
		{"512", 512},
		{"-1", 0},
		{"lots", 0},
	} {
		runtime.MemProfileRate = 4096
		t.Setenv(memProfileRateEnv, c.env)
		setMemProfileRate()
		if runtime.MemProfileRate != c.want {
			t.Errorf("%s=%q: MemProfileRate %d, want %d", memProfileRateEnv, c.env, runtime.MemProfileRate, c.want)
		}
	}
}
