package main

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"banger/internal/agent"
)

// PUT /actions (SEMANTICS.md §6) and PATCH /vm (§7).

func (v *vmm) putAction(body []byte) error {
	var b actionBody
	if err := decodeBody(body, &b); err != nil {
		return err
	}
	if err := oneOf(*b.ActionType, "FlushMetrics", "InstanceStart", "SendCtrlAltDel"); err != nil {
		return err
	}
	switch *b.ActionType {
	case "InstanceStart":
		return v.instanceStart()
	case "SendCtrlAltDel":
		return v.sendCtrlAltDel()
	default:
		return v.flushMetrics()
	}
}

func (v *vmm) instanceStart() error {
	if v.started {
		return fault(errAfterStart)
	}
	if v.boot == nil {
		return fault("Start microvm error: Cannot start microvm without kernel configuration.")
	}
	if v.sw.failStart {
		return fault("Start microvm error: Internal error while starting microVM: fcfake: FCFAKE_FAIL_START is set")
	}
	v.boot.close() // the kernel is loaded into guest memory; the files are not kept
	v.markBooted()
	v.log.logf(levelInfo, "Successfully started microvm that was configured from one single json")
	v.log.logf(levelInfo, "vCPUs running")
	v.printBootLines()
	v.afterStart()
	return nil
}

// markBooted moves the VM to Running and gives the simulated guest its
// identity: the hostname from the ip= kernel argument (else the instance
// id) and a fresh boot id.
func (v *vmm) markBooted() {
	v.started = true
	now := time.Now()
	v.bootedAt.Store(&now)
	host := v.args.id
	if v.boot != nil {
		if h := ipArgHostname(v.boot.args()); h != "" {
			host = h
		}
	}
	v.setGuest(host, newBootID(), now)
}

// markRestored moves a VM loaded from a snapshot to Running with the
// guest it had: same hostname and boot id, its uptime continuing from
// where the snapshot took it. Its agent answers at once (no boot delay).
func (v *vmm) markRestored(g snapGuest) {
	v.started = true
	now := time.Now()
	answered := now.Add(-v.sw.bootDelay)
	v.bootedAt.Store(&answered)
	v.setGuest(g.Hostname, g.BootID, now.Add(-time.Duration(g.UptimeS*float64(time.Second))))
}

func (v *vmm) setGuest(host, bootID string, bootTime time.Time) {
	logins := v.sw.sshLogins
	v.guest.Store(&guestInfo{hostname: host, bootID: bootID, bootTime: bootTime, handler: agent.Handler(agent.Options{
		Version:  "fcfake-" + v.version(),
		Legacy:   v.sw.agentLegacy,
		Hostname: host,
		BootID:   bootID,
		BootTime: bootTime,
		Logins:   func() (int, error) { return logins, nil },
		// The fake guest's clock is the host's: record the step, never
		// set the host clock.
		SetClock: func(t time.Time) error {
			v.rec.write(event{Event: "set_clock", Reason: t.UTC().Format(time.RFC3339Nano)})
			v.log.logf(levelInfo, "guest clock stepped to %s", t.UTC().Format(time.RFC3339Nano))
			return nil
		},
	})})
}

// afterStart arms FCFAKE_EXIT_AFTER_START (and FCFAKE_EXIT_LOG).
func (v *vmm) afterStart() {
	if v.sw.exitAfterStart <= 0 {
		return
	}
	time.AfterFunc(v.sw.exitAfterStart, func() {
		if v.sw.exitCode == 0 {
			v.guestReboot("FCFAKE_EXIT_AFTER_START: guest shut down")
			return
		}
		fmt.Fprintln(v.console, "[   42.000000] Kernel panic - not syncing: fcfake: FCFAKE_EXIT_AFTER_START")
		if v.sw.exitLog != "" {
			// As Firecracker reports a vCPU that stopped with an error.
			v.log.logf(levelError, "%s", v.sw.exitLog)
		}
		v.exit(v.sw.exitCode, "FCFAKE_EXIT_AFTER_START: vmm died")
	})
}

func (v *vmm) sendCtrlAltDel() error {
	if !v.started {
		return fault(errBeforeStart)
	}
	v.log.logf(levelInfo, "Sending CtrlAltDel to the guest (4 scancode bytes queued in the i8042 buffer)")
	if v.sw.ignoreCtrlAltDel {
		return nil
	}
	if !rebootsThroughKeyboard(v.guestArgs()) {
		// The guest reboots some other way; Firecracker does not notice.
		return nil
	}
	delay := v.sw.shutdownDelay
	go func() {
		// A paused guest reacts only once it runs again.
		for v.paused.Load() {
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(delay)
		fmt.Fprintln(v.console, "[   42.000000] systemd-shutdown[1]: Rebooting.")
		v.guestReboot("guest rebooted after SendCtrlAltDel (reboot=k)")
	}()
	return nil
}

func (v *vmm) flushMetrics() error {
	if !v.started {
		return fault(errBeforeStart)
	}
	if v.metrics != nil {
		line, _ := json.Marshal(map[string]any{"utc_timestamp_ms": time.Now().UnixMilli(), "fcfake": map[string]string{"state": v.state()}})
		if _, err := v.metrics.Write(append(line, '\n')); err != nil {
			return fault("Internal VMM error: Failed to write metrics: %s", osError(err))
		}
	}
	return nil
}

func (v *vmm) patchVM(body []byte) error {
	var b vmStateBody
	if err := decodeBody(body, &b); err != nil {
		return err
	}
	if err := oneOf(*b.State, "Paused", "Resumed"); err != nil {
		return err
	}
	if !v.started {
		return fault(errBeforeStart)
	}
	v.paused.Store(*b.State == "Paused")
	return nil
}

// guestArgs is the kernel line the guest received.
func (v *vmm) guestArgs() string {
	if v.boot == nil {
		return defaultBootArgs
	}
	return v.boot.args()
}

// kernelCmdline is the full line: boot_args (or the default) plus what
// Firecracker appends (SEMANTICS.md §10).
func (v *vmm) kernelCmdline() string {
	parts := []string{v.guestArgs()}
	if !v.args.enablePCI {
		parts = append(parts, "pci=off")
	}
	for _, d := range v.drives {
		if !d.IsRootDevice {
			continue
		}
		mode := "rw"
		if d.IsReadOnly {
			mode = "ro"
		}
		if d.PartUUID != "" {
			parts = append(parts, "root=PARTUUID="+d.PartUUID, mode)
		} else {
			parts = append(parts, "root=/dev/vda", mode)
		}
	}
	n := len(v.drives) + len(v.ifaces)
	if v.vsock != nil {
		n++
	}
	for i := range n {
		parts = append(parts, fmt.Sprintf("virtio_mmio.device=4K@0x%x:%d", 0xd0000000+i*0x1000, 5+i))
	}
	return strings.TrimSpace(strings.Join(parts, " "))
}

// printBootLines writes a few guest console lines to stdout (the serial
// console), as a booting kernel would.
func (v *vmm) printBootLines() {
	g := v.guest.Load()
	lines := []string{
		"[    0.000000] Linux version 6.1.0-fcfake (fcfake@banger) #1 SMP PREEMPT_DYNAMIC",
		"[    0.000000] Command line: " + v.kernelCmdline(),
		fmt.Sprintf("[    0.010000] Memory: %dK available", v.machine.MemSizeMib*1024),
		fmt.Sprintf("[    0.020000] smpboot: Allowing %d CPUs, 0 hotplug CPUs", v.machine.VcpuCount),
	}
	for i, d := range v.drives {
		lines = append(lines, fmt.Sprintf("[    0.100000] virtio_blk virtio%d: [vd%c] %s", i, 'a'+i, d.DriveID))
	}
	lines = append(lines,
		"[    0.300000] Run /sbin/init as init process",
		"",
		fmt.Sprintf("fcfake guest %s ttyS0", g.hostname),
		"",
	)
	fmt.Fprintln(v.console, strings.Join(lines, "\n"))
}

// ipArgHostname returns the hostname field of an
// ip=<client>:<server>:<gw>:<mask>:<hostname>:<dev>:<autoconf>:... argument.
func ipArgHostname(cmdline string) string {
	for _, f := range strings.Fields(cmdline) {
		if val, ok := strings.CutPrefix(f, "ip="); ok {
			parts := strings.Split(val, ":")
			if len(parts) > 4 {
				return parts[4]
			}
		}
	}
	return ""
}

// rebootsThroughKeyboard reports whether the kernel line makes the guest
// reboot through the i8042 controller, which is what ends Firecracker: the
// reboot= parameter (the last one wins, its comma-separated items parsed in
// order) selects type 'k' (kbd). Without reboot= an x86 guest does not.
func rebootsThroughKeyboard(cmdline string) bool {
	typ := byte(0)
	for _, f := range strings.Fields(cmdline) {
		val, ok := strings.CutPrefix(f, "reboot=")
		if !ok {
			continue
		}
		for _, item := range strings.Split(val, ",") {
			if item != "" && strings.IndexByte("abektp", item[0]) >= 0 {
				typ = item[0]
			}
		}
	}
	return typ == 'k'
}

func newBootID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
