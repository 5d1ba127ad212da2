package cli

import (
	"testing"

	"banger/internal/api"
)

func TestBalloonColumns(t *testing.T) {
	for _, tt := range []struct {
		b             *api.BalloonStats
		avail, ballon string
	}{
		{nil, "-", "-"},
		{&api.BalloonStats{}, "-", "0 MiB"},
		{&api.BalloonStats{TotalBytes: 1 << 30, AvailableBytes: 768 << 20}, "768 MiB / 1 GiB", "0 MiB"},
		{&api.BalloonStats{TargetMiB: 256, ActualMiB: 100, TotalBytes: 1 << 30, AvailableBytes: 512 << 20}, "512 MiB / 1 GiB", "100 of 256 MiB"},
	} {
		a, b := balloonColumns(tt.b)
		if a != tt.avail || b != tt.ballon {
			t.Errorf("balloonColumns(%+v) = %q, %q; want %q, %q", tt.b, a, b, tt.avail, tt.ballon)
		}
	}
}
