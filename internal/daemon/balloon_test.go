package daemon

import (
	"testing"
	"time"

	"banger/internal/config"
)

func TestBalloonFor(t *testing.T) {
	for _, tt := range []struct {
		setting, version string
		want             bool // a balloon at all
		reporting        bool
	}{
		{config.BalloonAuto, "1.16.1", true, true},
		{config.BalloonAuto, "1.14.0", true, true},
		{config.BalloonAuto, "1.13.1", false, false},
		{config.BalloonAuto, "", false, false},
		{config.BalloonOn, "1.16.1", true, true},
		{config.BalloonOn, "1.10.0", true, false},
		{config.BalloonOff, "1.16.1", false, false},
	} {
		b := balloonFor(tt.setting, tt.version, 5*time.Second)
		if (b != nil) != tt.want {
			t.Errorf("balloonFor(%s, %s) = %+v, want a balloon: %v", tt.setting, tt.version, b, tt.want)
			continue
		}
		if b == nil {
			continue
		}
		if b.FreePageReporting != tt.reporting || !b.DeflateOnOOM || b.AmountMib != 0 || b.StatsPollingIntervalS != 5 {
			t.Errorf("balloonFor(%s, %s) = %+v", tt.setting, tt.version, b)
		}
	}
	if b := balloonFor(config.BalloonOn, "1.16.1", 200*time.Millisecond); b.StatsPollingIntervalS != 1 {
		t.Errorf("sub-second stats interval gives %d, want 1", b.StatsPollingIntervalS)
	}
}
