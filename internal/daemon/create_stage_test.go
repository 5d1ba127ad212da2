package daemon

import (
	"regexp"
	"testing"

	"banger/internal/api"
)

// vm create's storage stage says how the root disk was made: the driver,
// the copy method (reflink or sparse), whether the grown root was built
// for it or copied from the cache, and how long it took.
func TestCreateStageSaysCopyMethod(t *testing.T) {
	r := newRig(t, nil)
	r.start()
	r.registerImage()
	evs, unsub := r.d.events.subscribe()
	defer unsub()
	storageLine := func(name string) string {
		t.Helper()
		r.create(name)
		var lines []string
		for _, ev := range drain(evs) {
			if ev.Kind == api.EventVMProgress && ev.Stage == "storage" && ev.VMID != "" {
				lines = append(lines, ev.Message)
			}
		}
		if len(lines) != 1 {
			t.Fatalf("create of %s published storage stages %q, want one", name, lines)
		}
		return lines[0]
	}
	for _, c := range []struct{ vm, want string }{
		{"first", `^root disk: copy \((reflink|sparse), grown root built, [0-9.]+ m?s\); work disk ready$`},
		{"second", `^root disk: copy \((reflink|sparse) of the cached grown root, [0-9.]+ m?s\); work disk ready$`},
	} {
		if got := storageLine(c.vm); !regexp.MustCompile(c.want).MatchString(got) {
			t.Errorf("create of %s: storage stage %q, want it to match %s", c.vm, got, c.want)
		}
	}
}
