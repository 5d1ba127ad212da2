package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"banger/internal/api"
	"banger/internal/firecracker"
	"banger/internal/store"
)

// clockTicks is USER_HZ, 100 on every Linux platform banger supports.
const clockTicks = 100

type procSample struct {
	pid   int
	ticks uint64
	at    time.Time
	cpu   float64
	rss   int64
}

type activity struct {
	rx, tx uint64
	since  time.Time // last time the VM showed use
}

type statsState struct {
	mu      sync.Mutex
	samples map[string]procSample
	active  map[string]activity
}

func newStatsState() *statsState {
	return &statsState{samples: map[string]procSample{}, active: map[string]activity{}}
}

// readProc returns utime+stime ticks and RSS bytes of pid.
func readProc(pid int) (uint64, int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	var rss int64
	for _, line := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			fs := strings.Fields(line)
			if len(fs) >= 2 {
				kb, _ := strconv.ParseInt(fs[1], 10, 64)
				rss = kb * 1024
			}
		}
	}
	return ut + st, rss, nil
}

func (d *Daemon) sampleStats(ctx context.Context) {
	now := time.Now()
	procs := d.vms.all()
	d.capConsoles(procs)
	d.stats.mu.Lock()
	defer d.stats.mu.Unlock()
	for id, pr := range procs {
		ticks, rss, err := readProc(pr.pid)
		if err != nil {
			delete(d.stats.samples, id)
			continue
		}
		s := procSample{pid: pr.pid, ticks: ticks, at: now, rss: rss}
		if prev, ok := d.stats.samples[id]; ok && prev.pid == pr.pid {
			if dt := now.Sub(prev.at).Seconds(); dt > 0 {
				s.cpu = float64(ticks-prev.ticks) / clockTicks / dt * 100
			}
		}
		d.stats.samples[id] = s
	}
	for id := range d.stats.samples {
		if _, ok := procs[id]; !ok {
			delete(d.stats.samples, id)
		}
	}
}

func (d *Daemon) rpcStats(ctx context.Context, raw json.RawMessage) (any, error) {
	var p api.StatsParams
	if err := decodeParams(api.MethodVMStats, raw, &p); err != nil {
		return nil, err
	}
	var vms []store.VM
	if len(p.Refs) == 0 {
		all, err := d.store.ListVMs(ctx)
		if err != nil {
			return nil, err
		}
		vms = all
	} else {
		for _, r := range p.Refs {
			vm, err := d.resolve(ctx, r)
			if err != nil {
				return nil, err
			}
			vms = append(vms, vm)
		}
	}
	out := api.StatsList{Stats: []api.Stats{}}
	balloons := map[string]*api.BalloonStats{}
	for i := range vms {
		if vms[i].State == api.StateRunning {
			balloons[vms[i].ID] = balloonStats(ctx, &vms[i])
		}
	}
	d.stats.mu.Lock()
	defer d.stats.mu.Unlock()
	for _, vm := range vms {
		s := api.Stats{VM: vm.ID, Name: vm.Name, State: vm.State, Balloon: balloons[vm.ID]}
		if vm.State == api.StateRunning {
			s.PID = vm.PID
			if smp, ok := d.stats.samples[vm.ID]; ok {
				s.CPUPercent, s.RSSBytes, s.SampledAt = smp.cpu, smp.rss, smp.at
			} else if _, rss, err := readProc(vm.PID); err == nil {
				s.RSSBytes = rss
			}
		}
		out.Stats = append(out.Stats, s)
	}
	return out, nil
}

// capConsoles keeps each running VM's console.log under consoleMaxBytes.
// Firecracker writes it with O_APPEND, so trimming it in place is safe.
// The path comes from the watched process, so a sample reads nothing from
// the store (with 500 VMs it read 500 rows a second).
func (d *Daemon) capConsoles(procs map[string]*proc) {
	for id, pr := range procs {
		if pr.console == "" {
			continue
		}
		if trimmed, err := firecracker.CapFile(pr.console, consoleMaxBytes); err != nil {
			d.log.Warn("capping console log", "vm_id", id, "path", pr.console, "err", err)
		} else if trimmed {
			d.log.Debug("trimmed console log", "vm_id", id)
		}
	}
}
