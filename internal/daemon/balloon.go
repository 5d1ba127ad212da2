package daemon

import (
	"context"
	"fmt"
	"time"

	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/firecracker"
	"banger/internal/store"
)

// balloonFor decides the balloon a VM boots with from the balloon key and
// the version of the Firecracker process that will run it (GET /version,
// so it is the binary actually started, not what the bundle claims). nil
// means no balloon.
//
// The balloon stays empty (amount 0): with free page reporting the guest
// returns pages it frees without the host asking, and deflate_on_oom lets
// a guest under pressure take back anything a later PATCH inflated.
// Statistics are polled at the daemon's stats interval (whole seconds, at
// least 1) so `vm stats` can show them.
func balloonFor(setting, fcVersion string, statsEvery time.Duration) *firecracker.Balloon {
	reporting := firecracker.SupportsFreePageReporting(fcVersion)
	switch setting {
	case config.BalloonOff:
		return nil
	case config.BalloonAuto:
		if !reporting {
			return nil
		}
	}
	return &firecracker.Balloon{
		AmountMib:             0,
		DeflateOnOOM:          true,
		StatsPollingIntervalS: max(1, int(statsEvery/time.Second)),
		FreePageReporting:     reporting,
	}
}

// configureBalloon installs the balloon before InstanceStart, when the
// balloon key and the Firecracker version call for one.
func (d *Daemon) configureBalloon(ctx context.Context, fc *firecracker.Client, vm *store.VM) error {
	if d.cfg.Balloon == config.BalloonOff {
		return nil
	}
	v, err := fc.GetVersion(ctx)
	if err != nil {
		return fmt.Errorf("reading the firecracker version for the balloon: %w", err)
	}
	b := balloonFor(d.cfg.Balloon, v.FirecrackerVersion, d.cfg.StatsPollInterval)
	if b == nil {
		d.log.Debug("no balloon: firecracker lacks free page reporting", "vm", vm.Name, "version", v.FirecrackerVersion)
		return nil
	}
	if err := fc.PutBalloon(ctx, *b); err != nil {
		return fmt.Errorf("configuring the balloon: %w", err)
	}
	return nil
}

// balloonStats asks a running VM's Firecracker for its balloon statistics;
// nil when it has no balloon (or no statistics) or does not answer quickly.
func balloonStats(ctx context.Context, vm *store.VM) *api.BalloonStats {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	s, err := firecracker.NewClient(apiSock(vm)).GetBalloonStats(ctx)
	if err != nil {
		return nil
	}
	return &api.BalloonStats{
		TargetMiB: s.TargetMib, ActualMiB: s.ActualMib,
		TotalBytes: s.TotalMemory, FreeBytes: s.FreeMemory, AvailableBytes: s.AvailableMemory, CachesBytes: s.DiskCaches,
		SwapInBytes: s.SwapIn, SwapOutBytes: s.SwapOut, MajorFaults: s.MajorFaults, MinorFaults: s.MinorFaults, OOMKills: s.OOMKill,
	}
}
