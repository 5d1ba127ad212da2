package daemon

import (
	"net/netip"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/store"
)

func TestDNSRecordsPublishesSleepingVMsAsleep(t *testing.T) {
	ip := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	vms := []store.VM{
		{Name: "run", State: api.StateRunning, IP: ip("172.16.0.2")},
		{Name: "sus", State: api.StateSuspended, IP: ip("172.16.0.3")},
		{Name: "pau", State: api.StatePaused, IP: ip("172.16.0.4")},
		{Name: "off", State: api.StateStopped, IP: ip("172.16.0.5")},
		{Name: "boot", State: api.StateStarting, IP: ip("172.16.0.6")},
		{Name: "noip", State: api.StateSuspended},
	}
	records, asleep := dnsRecords(vms)
	want := map[string]bool{"run": false, "sus": true, "pau": true}
	if len(records) != len(want) {
		t.Fatalf("records = %v, want names %v", records, want)
	}
	for name, sleepy := range want {
		if _, ok := records[name]; !ok {
			t.Errorf("%s not published", name)
		}
		if asleep[name] != sleepy {
			t.Errorf("%s asleep = %v, want %v", name, asleep[name], sleepy)
		}
	}
}

func TestIdleEvery(t *testing.T) {
	for window, want := range map[time.Duration]time.Duration{
		2 * time.Second: 1500 * time.Millisecond, 3 * time.Second: 1750 * time.Millisecond,
		time.Hour: time.Minute, 2 * time.Minute: 31 * time.Second,
	} {
		if got := idleEvery(window); got != want {
			t.Errorf("idleEvery(%s) = %s, want %s", window, got, want)
		}
	}
}
