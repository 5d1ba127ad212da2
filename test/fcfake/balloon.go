package main

import (
	"strconv"
	"strings"
	"time"
)

// The balloon device (firecracker-api-v1.16.1.yaml /balloon, docs/ballooning.md).
// Installed before boot only; statistics exist only when a polling interval
// was given then, and cannot be switched on or off after boot. The simulated
// guest driver complies at once (actual = target) and reports plausible
// memory figures. Free page hinting runs (/balloon/hinting/*) are not
// modelled.

const (
	errNoBalloon       = "No balloon device found."
	errBalloonTooLarge = "Amount of pages requested is too large."
	errStatsDisabled   = "Statistics for the balloon device are not enabled"
	errStatsChange     = "Cannot enable/disable the statistics after boot."
)

type balloonBody struct {
	AmountMib             *uint32 `json:"amount_mib" fc:"required"`
	DeflateOnOOM          *bool   `json:"deflate_on_oom" fc:"required"`
	StatsPollingIntervalS *uint16 `json:"stats_polling_interval_s"`
	FreePageHinting       *bool   `json:"free_page_hinting"`
	FreePageReporting     *bool   `json:"free_page_reporting"`
}

type balloonUpdateBody struct {
	AmountMib *uint32 `json:"amount_mib" fc:"required"`
}

type balloonStatsUpdateBody struct {
	StatsPollingIntervalS *uint16 `json:"stats_polling_interval_s" fc:"required"`
}

// balloonDev is the configured device, as GET /balloon shows it.
type balloonDev struct {
	AmountMib             uint32 `json:"amount_mib"`
	DeflateOnOOM          bool   `json:"deflate_on_oom"`
	StatsPollingIntervalS uint16 `json:"stats_polling_interval_s"`
	FreePageHinting       bool   `json:"free_page_hinting"`
	FreePageReporting     bool   `json:"free_page_reporting"`
}

// balloonAPI serves /balloon and /balloon/statistics; handled is false for
// the sub-paths it does not model.
func (v *vmm) balloonAPI(method, sub string, body []byte) (out any, handled bool, err error) {
	switch method + " " + sub {
	case "PUT ":
		return nil, true, v.putBalloon(body)
	case "GET ":
		if v.balloon == nil {
			return nil, true, fault(errNoBalloon)
		}
		return v.balloon, true, nil
	case "PATCH ":
		return nil, true, v.patchBalloon(body)
	case "GET statistics":
		s, err := v.balloonStats()
		return s, true, err
	case "PATCH statistics":
		return nil, true, v.patchBalloonStats(body)
	}
	return nil, false, nil
}

func (v *vmm) putBalloon(body []byte) error {
	var b balloonBody
	if err := decodeBody(body, &b); err != nil {
		return err
	}
	// Free page hinting and reporting came with Firecracker 1.14; an older
	// one's parser does not know the fields.
	if !v.hasFreePageReporting() {
		for name, set := range map[string]bool{"free_page_hinting": b.FreePageHinting != nil, "free_page_reporting": b.FreePageReporting != nil} {
			if set {
				return fault("unknown field `%s`, expected one of `amount_mib`, `deflate_on_oom`, `stats_polling_interval_s`", name)
			}
		}
	}
	if v.started {
		return fault(errAfterStart)
	}
	if uint64(*b.AmountMib) > v.machine.MemSizeMib {
		return fault(errBalloonTooLarge)
	}
	d := &balloonDev{AmountMib: *b.AmountMib, DeflateOnOOM: *b.DeflateOnOOM}
	if b.StatsPollingIntervalS != nil {
		d.StatsPollingIntervalS = *b.StatsPollingIntervalS
	}
	if b.FreePageHinting != nil {
		d.FreePageHinting = *b.FreePageHinting
	}
	if b.FreePageReporting != nil {
		d.FreePageReporting = *b.FreePageReporting
	}
	v.balloon = d
	v.bootConfigured = true
	return nil
}

func (v *vmm) patchBalloon(body []byte) error {
	var b balloonUpdateBody
	if err := decodeBody(body, &b); err != nil {
		return err
	}
	if !v.started {
		return fault(errBeforeStart)
	}
	if v.balloon == nil {
		return fault(errNoBalloon)
	}
	if uint64(*b.AmountMib) > v.machine.MemSizeMib {
		return fault(errBalloonTooLarge)
	}
	v.balloon.AmountMib = *b.AmountMib
	return nil
}

func (v *vmm) patchBalloonStats(body []byte) error {
	var b balloonStatsUpdateBody
	if err := decodeBody(body, &b); err != nil {
		return err
	}
	if !v.started {
		return fault(errBeforeStart)
	}
	switch {
	case v.balloon == nil:
		return fault(errNoBalloon)
	case v.balloon.StatsPollingIntervalS == 0:
		return fault(errStatsDisabled)
	case *b.StatsPollingIntervalS == 0:
		return fault(errStatsChange)
	}
	v.balloon.StatsPollingIntervalS = *b.StatsPollingIntervalS
	return nil
}

// balloonStatsBody is GET /balloon/statistics.
type balloonStatsBody struct {
	TargetPages     uint32 `json:"target_pages"`
	ActualPages     uint32 `json:"actual_pages"`
	TargetMib       uint32 `json:"target_mib"`
	ActualMib       uint32 `json:"actual_mib"`
	SwapIn          uint64 `json:"swap_in"`
	SwapOut         uint64 `json:"swap_out"`
	MajorFaults     uint64 `json:"major_faults"`
	MinorFaults     uint64 `json:"minor_faults"`
	FreeMemory      uint64 `json:"free_memory"`
	TotalMemory     uint64 `json:"total_memory"`
	AvailableMemory uint64 `json:"available_memory"`
	DiskCaches      uint64 `json:"disk_caches"`
}

// balloonStats makes up what a small idle guest reports: the kernel keeps
// about 4% of memory, userspace and caches a little that grows with uptime,
// and the balloon itself holds its target.
func (v *vmm) balloonStats() (*balloonStatsBody, error) {
	if !v.started {
		return nil, fault(errBeforeStart)
	}
	if v.balloon == nil {
		return nil, fault(errNoBalloon)
	}
	if v.balloon.StatsPollingIntervalS == 0 {
		return nil, fault(errStatsDisabled)
	}
	const mib = 1 << 20
	var up time.Duration
	if t := v.bootedAt.Load(); t != nil {
		up = time.Since(*t)
	}
	total := v.machine.MemSizeMib * mib * 96 / 100
	inflated := uint64(v.balloon.AmountMib) * mib
	used := min(total/4, 48*mib+uint64(up.Seconds())*64*1024)
	caches := min(total/8, 16*mib+uint64(up.Seconds())*16*1024)
	free := total - min(total, used+caches+inflated)
	pages := v.balloon.AmountMib * (mib / 4096)
	return &balloonStatsBody{
		TargetPages: pages, ActualPages: pages, TargetMib: v.balloon.AmountMib, ActualMib: v.balloon.AmountMib,
		MajorFaults: 200, MinorFaults: 50000 + uint64(up.Seconds())*100,
		FreeMemory: free, TotalMemory: total, AvailableMemory: free + caches, DiskCaches: caches,
	}, nil
}

// hasFreePageReporting reports whether the claimed version is 1.14 or
// newer.
func (v *vmm) hasFreePageReporting() bool {
	parts := strings.SplitN(strings.TrimPrefix(v.version(), "v"), ".", 3)
	if len(parts) < 2 {
		return true
	}
	major, err1 := strconv.Atoi(parts[0])
	minor, err2 := strconv.Atoi(strings.SplitN(parts[1], "-", 2)[0])
	if err1 != nil || err2 != nil {
		return true
	}
	return major > 1 || major == 1 && minor >= 14
}
