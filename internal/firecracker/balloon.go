package firecracker

import (
	"context"
	"net/http"
	"strconv"
	"strings"
)

// Balloon is PUT /balloon (pre-boot only) and GET /balloon. AmountMib is the
// target balloon size and must not exceed the machine's memory (so the
// machine config goes first). A non-zero StatsPollingIntervalS enables
// statistics, which cannot be turned on or off after boot.
// FreePageHinting and FreePageReporting exist from Firecracker 1.14 on (an
// older one rejects them as unknown fields); with free page reporting the
// guest kernel (CONFIG_PAGE_REPORTING) hands pages it frees back to the
// host without the balloon being inflated.
type Balloon struct {
	AmountMib             int  `json:"amount_mib"`
	DeflateOnOOM          bool `json:"deflate_on_oom"`
	StatsPollingIntervalS int  `json:"stats_polling_interval_s,omitempty"`
	FreePageHinting       bool `json:"free_page_hinting,omitempty"`
	FreePageReporting     bool `json:"free_page_reporting,omitempty"`
}

// BalloonStats is GET /balloon/statistics. The four size fields are always
// there; the others are what the guest driver last reported (bytes, or
// counts for faults and allocations), zero when it reported nothing.
type BalloonStats struct {
	TargetPages        int64 `json:"target_pages"`
	ActualPages        int64 `json:"actual_pages"`
	TargetMib          int64 `json:"target_mib"`
	ActualMib          int64 `json:"actual_mib"`
	SwapIn             int64 `json:"swap_in,omitempty"`
	SwapOut            int64 `json:"swap_out,omitempty"`
	MajorFaults        int64 `json:"major_faults,omitempty"`
	MinorFaults        int64 `json:"minor_faults,omitempty"`
	FreeMemory         int64 `json:"free_memory,omitempty"`
	TotalMemory        int64 `json:"total_memory,omitempty"`
	AvailableMemory    int64 `json:"available_memory,omitempty"`
	DiskCaches         int64 `json:"disk_caches,omitempty"`
	HugetlbAllocations int64 `json:"hugetlb_allocations,omitempty"`
	HugetlbFailures    int64 `json:"hugetlb_failures,omitempty"`
	OOMKill            int64 `json:"oom_kill,omitempty"`
	AllocStall         int64 `json:"alloc_stall,omitempty"`
	AsyncScan          int64 `json:"async_scan,omitempty"`
	DirectScan         int64 `json:"direct_scan,omitempty"`
	AsyncReclaim       int64 `json:"async_reclaim,omitempty"`
	DirectReclaim      int64 `json:"direct_reclaim,omitempty"`
}

type balloonUpdate struct {
	AmountMib int `json:"amount_mib"`
}

// PutBalloon installs the balloon device (pre-boot only).
func (c *Client) PutBalloon(ctx context.Context, b Balloon) error {
	return c.do(ctx, http.MethodPut, "/balloon", b, nil)
}

// GetBalloon reads the balloon's configuration; a 400 when there is none.
func (c *Client) GetBalloon(ctx context.Context) (Balloon, error) {
	var b Balloon
	err := c.do(ctx, http.MethodGet, "/balloon", nil, &b)
	return b, err
}

// PatchBalloon changes the balloon's target size (post-boot).
func (c *Client) PatchBalloon(ctx context.Context, amountMib int) error {
	return c.do(ctx, http.MethodPatch, "/balloon", balloonUpdate{AmountMib: amountMib}, nil)
}

// GetBalloonStats reads the latest balloon statistics; a 400 when the
// balloon was configured without statistics (or not at all).
func (c *Client) GetBalloonStats(ctx context.Context) (BalloonStats, error) {
	var s BalloonStats
	err := c.do(ctx, http.MethodGet, "/balloon/statistics", nil, &s)
	return s, err
}

// FreePageReportingSince is the first Firecracker release whose balloon
// takes free_page_reporting.
var FreePageReportingSince = [2]int{1, 14}

// SupportsFreePageReporting reports whether a Firecracker version, as GET
// /version or `firecracker --version` gives it ("1.16.1", "v1.17.0-dev",
// "Firecracker v1.16.1"), has free page reporting. An unparsable version is
// treated as too old.
func SupportsFreePageReporting(version string) bool {
	major, minor, ok := parseVersion(version)
	if !ok {
		return false
	}
	want := FreePageReportingSince
	return major > want[0] || major == want[0] && minor >= want[1]
}

// parseVersion reads major and minor from a version string.
func parseVersion(v string) (major, minor int, ok bool) {
	v = strings.TrimSpace(v)
	if i := strings.LastIndexByte(v, ' '); i >= 0 {
		v = v[i+1:]
	}
	v = strings.TrimPrefix(v, "v")
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return 0, 0, false
	}
	major, err1 := strconv.Atoi(parts[0])
	minorStr := parts[1]
	if i := strings.IndexAny(minorStr, "-+"); i >= 0 {
		minorStr = minorStr[:i]
	}
	minor, err2 := strconv.Atoi(minorStr)
	if err1 != nil || err2 != nil || major < 0 || minor < 0 {
		return 0, 0, false
	}
	return major, minor, true
}
