//go:build system

package test

import (
	"encoding/json"
	"strings"
	"testing"

	"banger/internal/api"
)

// TestBalloon: with balloon = "auto" (the default) and fcfake reporting
// Firecracker 1.16.1, a VM boots with the balloon and free page reporting,
// installed before InstanceStart, and `vm stats` shows its statistics;
// balloon = "off" installs none.
func TestBalloon(t *testing.T) {
	e := newEnv(t, "")
	e.registerImage()
	e.ok("vm", "create", "mem")

	var order []string
	var body string
	for _, ev := range e.records() {
		if ev.Event != "request" {
			continue
		}
		switch {
		case ev.Method == "PUT" && ev.Path == "/balloon":
			order = append(order, "balloon")
			body = string(ev.Body)
		case ev.Method == "PUT" && ev.Path == "/actions" && strings.Contains(string(ev.Body), "InstanceStart"):
			order = append(order, "start")
		}
	}
	if strings.Join(order, " ") != "balloon start" {
		t.Fatalf("PUT /balloon and InstanceStart came as %v, want the balloon first", order)
	}
	var b struct {
		AmountMib         *int  `json:"amount_mib"`
		DeflateOnOOM      bool  `json:"deflate_on_oom"`
		StatsPollingS     int   `json:"stats_polling_interval_s"`
		FreePageReporting *bool `json:"free_page_reporting"`
	}
	if err := json.Unmarshal([]byte(body), &b); err != nil {
		t.Fatalf("balloon body %s: %v", body, err)
	}
	if b.AmountMib == nil || *b.AmountMib != 0 || !b.DeflateOnOOM || b.StatsPollingS < 1 || b.FreePageReporting == nil || !*b.FreePageReporting {
		t.Fatalf("balloon body %s: want amount 0, deflate_on_oom, statistics on, free_page_reporting", body)
	}

	var st api.StatsList
	if err := json.Unmarshal([]byte(e.ok("vm", "stats", "mem", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Stats) != 1 || st.Stats[0].Balloon == nil {
		t.Fatalf("vm stats --json: %+v, want balloon statistics", st)
	}
	bs := st.Stats[0].Balloon
	// default_memory_mib is 256 in the harness.
	if bs.TotalBytes <= 0 || bs.TotalBytes > 256<<20 || bs.AvailableBytes <= 0 || bs.AvailableBytes > bs.TotalBytes || bs.ActualMiB != 0 {
		t.Fatalf("balloon statistics implausible: %+v", bs)
	}
	out := e.ok("vm", "stats", "mem")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "GUEST AVAIL") || !strings.Contains(lines[0], "BALLOON") ||
		!strings.Contains(lines[1], "MiB /") || !strings.HasSuffix(strings.TrimSpace(lines[1]), "0 MiB") {
		t.Fatalf("vm stats table:\n%s", out)
	}

	// A stopped VM has no statistics.
	e.ok("vm", "stop", "mem")
	st = api.StatsList{}
	if err := json.Unmarshal([]byte(e.ok("vm", "stats", "mem", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if st.Stats[0].Balloon != nil {
		t.Fatalf("stopped vm has balloon statistics %+v", st.Stats[0].Balloon)
	}
	e.ok("vm", "delete", "mem")
	e.assertClean()
}

// TestBalloonOff: balloon = "off" boots without one and vm stats says "-".
func TestBalloonOff(t *testing.T) {
	e := newEnv(t, "balloon = \"off\"\n")
	e.registerImage()
	e.ok("vm", "create", "nob")
	for _, ev := range e.records() {
		if ev.Event == "request" && strings.HasPrefix(ev.Path, "/balloon") {
			t.Fatalf("balloon = off, but fcfake saw %s %s", ev.Method, ev.Path)
		}
	}
	var st api.StatsList
	if err := json.Unmarshal([]byte(e.ok("vm", "stats", "nob", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Stats) != 1 || st.Stats[0].Balloon != nil || st.Stats[0].PID == 0 {
		t.Fatalf("vm stats --json: %+v, want a running vm without balloon statistics", st)
	}
	out := e.ok("vm", "stats", "nob")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if f := strings.Fields(lines[len(lines)-1]); len(lines) != 2 || len(f) < 2 || f[len(f)-1] != "-" || f[len(f)-2] != "-" {
		t.Fatalf("vm stats table, want - - for GUEST AVAIL and BALLOON:\n%s", out)
	}
	e.ok("vm", "delete", "nob")
	e.assertClean()
}
