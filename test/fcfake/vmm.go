package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	fcVersion = "1.16.1"

	stateNotStarted = "Not started"
	stateRunning    = "Running"
	statePaused     = "Paused"

	errAfterStart  = "The requested operation is not supported after starting the microVM."
	errBeforeStart = "The requested operation is not supported before starting the microVM."

	// defaultBootArgs is Firecracker's kernel line when boot_args is omitted.
	defaultBootArgs = "reboot=k panic=1 nomodule 8250.nr_uarts=0 i8042.noaux i8042.nomux i8042.dumbkbd swiotlb=noforce"
)

type machineConfig struct {
	VcpuCount       uint8  `json:"vcpu_count"`
	MemSizeMib      uint64 `json:"mem_size_mib"`
	SMT             bool   `json:"smt"`
	TrackDirtyPages bool   `json:"track_dirty_pages"`
	HugePages       string `json:"huge_pages"`
	CPUTemplate     string `json:"cpu_template,omitempty"`
}

func defaultMachine() machineConfig {
	return machineConfig{VcpuCount: 1, MemSizeMib: 128, HugePages: "None"}
}

type bootSource struct {
	KernelImagePath string  `json:"kernel_image_path"`
	InitrdPath      string  `json:"initrd_path,omitempty"`
	BootArgs        *string `json:"boot_args,omitempty"`
	kernel, initrd  *os.File
}

func (b *bootSource) close() {
	for _, f := range []*os.File{b.kernel, b.initrd} {
		if f != nil {
			f.Close()
		}
	}
}

// args returns the guest kernel line before Firecracker's additions.
func (b *bootSource) args() string {
	if b.BootArgs == nil {
		return defaultBootArgs
	}
	return *b.BootArgs
}

type drive struct {
	DriveID      string `json:"drive_id"`
	PathOnHost   string `json:"path_on_host"`
	IsRootDevice bool   `json:"is_root_device"`
	IsReadOnly   bool   `json:"is_read_only"`
	PartUUID     string `json:"partuuid,omitempty"`
	CacheType    string `json:"cache_type"`
	IOEngine     string `json:"io_engine"`
	f            *os.File
}

type netIface struct {
	IfaceID     string `json:"iface_id"`
	HostDevName string `json:"host_dev_name"`
	GuestMAC    string `json:"guest_mac,omitempty"`
	MTU         int64  `json:"mtu,omitempty"`
	tap         *os.File
}

// vmm is the fake's whole state. API requests run one at a time under
// apiMu, which guards every field not marked otherwise.
type vmm struct {
	apiMu   sync.Mutex
	args    args
	sw      switches
	log     *fcLogger
	rec     *recorder
	console io.Writer

	started        bool
	bootConfigured bool // a boot-specific resource was configured: no snapshot load
	machine        machineConfig
	boot           *bootSource
	drives         []*drive
	ifaces         []*netIface
	vsock          *vsockDev
	balloon        *balloonDev
	metrics        *os.File

	// Read by the vsock and timer goroutines.
	bootedAt atomic.Pointer[time.Time]
	paused   atomic.Bool
	guest    atomic.Pointer[guestInfo]
	hostPort atomic.Uint32 // vsock host-side ports handed out so far
	exitOnce sync.Once

	agentConns *connQueue // vsock connections for the simulated guest's agent
}

// guestInfo is the simulated guest: its name and the agent that answers.
type guestInfo struct {
	hostname string
	bootID   string
	bootTime time.Time
	handler  http.Handler
}

// version is the Firecracker version the fake claims (FCFAKE_VERSION).
func (v *vmm) version() string {
	if v.sw.version != "" {
		return v.sw.version
	}
	return fcVersion
}

func newVMM(a args, sw switches, log *fcLogger, rec *recorder, console io.Writer) *vmm {
	return &vmm{args: a, sw: sw, log: log, rec: rec, console: console, machine: defaultMachine(), agentConns: newConnQueue()}
}

func (v *vmm) state() string {
	switch {
	case !v.started:
		return stateNotStarted
	case v.paused.Load():
		return statePaused
	default:
		return stateRunning
	}
}

// exit ends the process with code, recording why. Sockets are left in place:
// Firecracker never unlinks them.
func (v *vmm) exit(code int, reason string) {
	v.exitOnce.Do(func() {
		v.log.logf(levelInfo, "Firecracker exiting with code %d: %s", code, reason)
		v.rec.write(event{Event: "exit", Code: &code, Reason: reason})
		os.Exit(code)
	})
}

// guestReboot simulates a guest that rebooted through the i8042 controller
// (reboot=k): Firecracker exits 0.
func (v *vmm) guestReboot(reason string) {
	fmt.Fprintln(v.console, "[   42.000000] reboot: Restarting system")
	v.log.logf(levelInfo, "Vmm is stopping.")
	v.exit(0, reason)
}

// Levels of Firecracker's logger.
const (
	levelOff = iota
	levelError
	levelWarn
	levelInfo
	levelDebug
	levelTrace
)

var levelNames = []string{"OFF", "ERROR", "WARN", "INFO", "DEBUG", "TRACE"}

// parseLevel accepts Firecracker's level names in any case.
func parseLevel(s string) (int, bool) {
	switch strings.ToLower(s) {
	case "off":
		return levelOff, true
	case "error":
		return levelError, true
	case "warn", "warning":
		return levelWarn, true
	case "info":
		return levelInfo, true
	case "debug":
		return levelDebug, true
	case "trace":
		return levelTrace, true
	}
	return 0, false
}

// fcLogger writes Firecracker-style log lines to the log file, or to stdout
// until one is configured.
type fcLogger struct {
	mu         sync.Mutex
	id         string
	w          io.Writer
	f          *os.File
	level      int
	showLevel  bool
	showOrigin bool
}

// openLogPath opens a log (or metrics) destination the way Firecracker does.
func openLogPath(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND|syscall.O_NONBLOCK, 0o666)
}

func (l *fcLogger) setFile(f *os.File) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f != nil {
		l.f.Close()
	}
	l.f, l.w = f, f
}

func (l *fcLogger) configure(level int, showLevel, showOrigin bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.level, l.showLevel, l.showOrigin = level, showLevel, showOrigin
}

func (l *fcLogger) logf(level int, format string, a ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if level > l.level || level == levelOff {
		return
	}
	tag := l.id + ":main"
	if l.showLevel {
		tag += ":" + levelNames[level]
	}
	if l.showOrigin {
		tag += ":fcfake"
	}
	ts := time.Now().Format("2006-01-02T15:04:05.000000000")
	fmt.Fprintf(l.w, "%s [%s] %s\n", ts, tag, fmt.Sprintf(format, a...))
}
