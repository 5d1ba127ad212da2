package main

import (
	"encoding/json"
	"testing"
)

func TestBalloonStateRules(t *testing.T) {
	p := startFC(t, fcOpts{})
	p.fault("GET", "/balloon", "", errNoBalloon)
	p.fault("PUT", "/balloon", `{"amount_mib":0}`, "missing field `deflate_on_oom`")
	p.fault("PUT", "/balloon", `{"amount_mib":0,"deflate_on_oom":true,"free_page_reports":true}`, "unknown field `free_page_reports`")
	p.fault("PATCH", "/balloon", `{"amount_mib":1}`, errBeforeStart)
	p.fault("GET", "/balloon/statistics", "", errBeforeStart)
	// amount_mib is checked against the machine's memory (128 MiB by default).
	p.fault("PUT", "/balloon", `{"amount_mib":129,"deflate_on_oom":true}`, errBalloonTooLarge)
	p.ok("PUT", "/balloon", `{"amount_mib":0,"deflate_on_oom":true,"stats_polling_interval_s":1,"free_page_reporting":true}`)
	if r := p.do("GET", "/balloon", ""); r.status != 200 || r.body != `{"amount_mib":0,"deflate_on_oom":true,"stats_polling_interval_s":1,"free_page_hinting":false,"free_page_reporting":true}` {
		t.Errorf("GET /balloon = %d %s", r.status, r.body)
	}
	p.fault("PUT", "/balloon/hinting/start", `{}`, "fcfake does not implement")
	p.boot(nil) // 256 MiB

	p.fault("PUT", "/balloon", `{"amount_mib":0,"deflate_on_oom":true}`, errAfterStart)
	p.fault("PATCH", "/balloon/statistics", `{"stats_polling_interval_s":0}`, errStatsChange)
	p.ok("PATCH", "/balloon/statistics", `{"stats_polling_interval_s":5}`)
	p.fault("PATCH", "/balloon", `{"amount_mib":257}`, errBalloonTooLarge)
	p.ok("PATCH", "/balloon", `{"amount_mib":64}`)
	r := p.do("GET", "/balloon/statistics", "")
	if r.status != 200 {
		t.Fatalf("GET /balloon/statistics = %d %s", r.status, r.body)
	}
	var s balloonStatsBody
	if err := json.Unmarshal([]byte(r.body), &s); err != nil {
		t.Fatal(err)
	}
	if s.TargetMib != 64 || s.ActualMib != 64 || s.TargetPages != 64*256 || s.ActualPages != s.TargetPages {
		t.Errorf("balloon size fields = %+v, want 64 MiB / 16384 pages", s)
	}
	if s.TotalMemory == 0 || s.TotalMemory > 256<<20 || s.AvailableMemory > s.TotalMemory || s.FreeMemory > s.AvailableMemory || s.FreeMemory+64<<20 > s.TotalMemory {
		t.Errorf("memory figures implausible: %+v", s)
	}
}

func TestBalloonWithoutStats(t *testing.T) {
	p := startFC(t, fcOpts{})
	p.ok("PUT", "/balloon", `{"amount_mib":0,"deflate_on_oom":false}`)
	p.boot(nil)
	p.fault("GET", "/balloon/statistics", "", errStatsDisabled)
	p.fault("PATCH", "/balloon/statistics", `{"stats_polling_interval_s":1}`, errStatsDisabled)
}

func TestNoBalloonAfterBoot(t *testing.T) {
	p := startFC(t, fcOpts{})
	p.boot(nil)
	p.fault("GET", "/balloon/statistics", "", errNoBalloon)
	p.fault("PATCH", "/balloon", `{"amount_mib":1}`, errNoBalloon)
}

func TestBalloonFieldsOfOlderFirecracker(t *testing.T) {
	p := startFC(t, fcOpts{env: []string{"FCFAKE_VERSION=1.13.0"}})
	p.fault("PUT", "/balloon", `{"amount_mib":0,"deflate_on_oom":true,"free_page_reporting":true}`, "unknown field `free_page_reporting`")
	p.fault("PUT", "/balloon", `{"amount_mib":0,"deflate_on_oom":true,"free_page_hinting":false}`, "unknown field `free_page_hinting`")
	p.ok("PUT", "/balloon", `{"amount_mib":0,"deflate_on_oom":true,"stats_polling_interval_s":1}`)
}
