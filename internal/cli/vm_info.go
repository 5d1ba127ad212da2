package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/config"
)

// validateName checks a VM name before calling the daemon (which checks
// again). Empty means "generate one".
func validateName(name string) error {
	if name == "" || api.ValidName(name) {
		return nil
	}
	return usageErrorf("vm name %q is not a DNS label: use 1-63 lowercase letters, digits and inner hyphens", name)
}

func (a *app) vmStatsCmd() *cobra.Command {
	var jsonOut bool
	cmd := &cobra.Command{
		Use:     "stats [VM...]",
		Short:   "Show CPU and memory use of VMs' Firecracker processes and their guests' balloon statistics",
		Example: "  banger vm stats\n  banger vm stats dev --json",
		RunE: func(c *cobra.Command, refs []string) error {
			cl, err := a.client(c.Context())
			if err != nil {
				return err
			}
			var ids []string
			failed := false
			if len(refs) > 0 {
				vms, err := listVMs(c.Context(), cl)
				if err != nil {
					return err
				}
				for _, r := range resolveRefs(vms, refs) {
					if r.err != nil {
						fmt.Fprintf(a.stderr, "banger: %s\n", r.err)
						failed = true
						continue
					}
					ids = append(ids, r.vm.ID)
				}
				if len(ids) == 0 {
					return &silentExit{code: ExitFailed}
				}
			}
			var st api.StatsList
			if err := cl.Call(c.Context(), api.MethodVMStats, api.StatsParams{Refs: ids}, &st); err != nil {
				return err
			}
			if jsonOut {
				st.Stats = nonNil(st.Stats)
				if err := writeJSON(a.stdout, st); err != nil {
					return err
				}
			} else {
				t := newTable(a.stdout)
				t.row("NAME", "STATE", "PID", "CPU%", "RSS", "GUEST AVAIL", "BALLOON")
				for _, s := range st.Stats {
					pid, cpu, rss := "-", "-", "-"
					if s.PID > 0 {
						pid = fmt.Sprint(s.PID)
						cpu = fmt.Sprintf("%.1f", s.CPUPercent)
						rss = config.FormatSize(s.RSSBytes)
					}
					avail, balloon := balloonColumns(s.Balloon)
					t.row(s.Name, s.State, pid, cpu, rss, avail, balloon)
				}
				t.flush()
			}
			if failed {
				return &silentExit{code: ExitFailed}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	return cmd
}

// balloonColumns renders a VM's balloon statistics for `vm stats`: the
// guest's available memory of its total, and the balloon's actual size
// (of its target when they differ); "-" without a balloon.
func balloonColumns(b *api.BalloonStats) (avail, balloon string) {
	if b == nil {
		return "-", "-"
	}
	avail = "-"
	if b.TotalBytes > 0 {
		avail = config.FormatSize(b.AvailableBytes) + " / " + config.FormatSize(b.TotalBytes)
	}
	balloon = fmt.Sprintf("%d MiB", b.ActualMiB)
	if b.ActualMiB != b.TargetMiB {
		balloon = fmt.Sprintf("%d of %d MiB", b.ActualMiB, b.TargetMiB)
	}
	return avail, balloon
}

func (a *app) vmHealthCmd() *cobra.Command {
	var jsonOut bool
	cmd := &cobra.Command{
		Use:     "health VM...",
		Short:   "Ask VMs' guest agents whether they are healthy",
		Example: "  banger vm health dev\n  banger vm health a b --json",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, refs []string) error {
			cl, err := a.client(c.Context())
			if err != nil {
				return err
			}
			outs, err := fanOut(c.Context(), cl, refs, func(ctx context.Context, vm api.VM) (api.Health, error) {
				var h api.Health
				err := cl.Call(ctx, api.MethodVMHealth, api.VMRef{Ref: vm.ID}, &h)
				return h, err
			})
			if err != nil {
				return err
			}
			failed := 0
			var js []api.Health
			t := newTable(a.stdout)
			if !jsonOut {
				t.row("NAME", "HEALTH", "RTT", "UPTIME", "REASON")
			}
			for _, o := range outs {
				if o.err != nil {
					failed++
					fmt.Fprintf(a.stderr, "banger: %s: %s\n", o.label(), errMessage(o.err))
					continue
				}
				h := o.val
				if !h.Healthy {
					failed++
				}
				if jsonOut {
					js = append(js, h)
					continue
				}
				status, rtt, up := "unhealthy", "-", "-"
				if h.Healthy {
					status = "healthy"
					rtt = fmt.Sprintf("%.1fms", h.RTTMillis)
					up = humanDuration(time.Duration(h.UptimeS * float64(time.Second)))
				}
				reason := h.Reason
				if reason == "" {
					reason = "-"
				}
				t.row(o.label(), status, rtt, up, reason)
			}
			if jsonOut {
				if err := writeJSON(a.stdout, nonNil(js)); err != nil {
					return err
				}
			} else {
				t.flush()
			}
			if failed > 0 {
				return &silentExit{code: ExitFailed}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	return cmd
}

func (a *app) vmLogsCmd() *cobra.Command {
	var follow, fc bool
	cmd := &cobra.Command{
		Use:     "logs VM",
		Short:   "Show a VM's serial console (or Firecracker's own log)",
		Example: "  banger vm logs dev\n  banger vm logs -f dev\n  banger vm logs --firecracker dev",
		Args:    cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			vm, err := a.oneVM(c.Context(), args[0])
			if err != nil {
				return err
			}
			name := "console.log"
			if fc {
				name = "firecracker.log"
			}
			path := filepath.Join(vm.Dir, name)
			f, err := os.Open(path)
			if err != nil {
				if os.IsNotExist(err) {
					return failf("%s has no %s yet (it has not been started)", vm.Name, name)
				}
				return failf("opening %s: %v", path, err)
			}
			defer f.Close()
			if _, err := io.Copy(a.stdout, f); err != nil {
				return err
			}
			if !follow {
				return nil
			}
			for {
				select {
				case <-c.Context().Done():
					return nil
				case <-time.After(200 * time.Millisecond):
				}
				if fi, err := f.Stat(); err == nil {
					if pos, _ := f.Seek(0, io.SeekCurrent); fi.Size() < pos {
						_, _ = f.Seek(0, io.SeekStart) // trimmed by the size cap
					}
				}
				if _, err := io.Copy(a.stdout, f); err != nil {
					return err
				}
			}
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new output")
	cmd.Flags().BoolVar(&fc, "firecracker", false, "show Firecracker's own log instead of the console")
	return cmd
}
