// Package firecracker is banger's stdlib client for the Firecracker v1.16.1
// API (HTTP/1.1 over the per-VM API unix socket), the launch of the
// Firecracker process, the process bookkeeping the daemon needs to find,
// watch and stop it, and the host side of Firecracker's hybrid vsock.
//
// Behaviour follows docs/firecracker-semantics.md: every PUT or
// PATCH answers 204, every GET 200 with JSON, and every error 400 with
// {"fault_message": ...}.
package firecracker

// Instance states reported by GET / (InstanceInfo.State).
const (
	StateNotStarted = "Not started"
	StateRunning    = "Running"
	StatePaused     = "Paused"
)

// States accepted by PATCH /vm.
const (
	VMPaused  = "Paused"
	VMResumed = "Resumed"
)

// Actions accepted by PUT /actions.
const (
	ActionInstanceStart  = "InstanceStart"
	ActionSendCtrlAltDel = "SendCtrlAltDel"
	ActionFlushMetrics   = "FlushMetrics"
)

// MachineConfig is the spec's MachineConfiguration (PUT/GET /machine-config).
// VCPUCount is 1..32 (1 or even when SMT is on); MemSizeMib > 0.
type MachineConfig struct {
	VCPUCount       int    `json:"vcpu_count"`
	MemSizeMib      int    `json:"mem_size_mib"`
	SMT             *bool  `json:"smt,omitempty"`
	TrackDirtyPages *bool  `json:"track_dirty_pages,omitempty"`
	HugePages       string `json:"huge_pages,omitempty"` // "None" | "2M"
	CPUTemplate     string `json:"cpu_template,omitempty"`
}

// BootSource is PUT /boot-source. BootArgs, when set, replaces Firecracker's
// default kernel line entirely (see KernelCmdline).
type BootSource struct {
	KernelImagePath string `json:"kernel_image_path"`
	BootArgs        string `json:"boot_args,omitempty"`
	InitrdPath      string `json:"initrd_path,omitempty"`
}

// TokenBucket is one bucket of a RateLimiter. A bucket whose Size or
// RefillTime is 0 means "unlimited".
type TokenBucket struct {
	Size         int64  `json:"size"`
	OneTimeBurst *int64 `json:"one_time_burst,omitempty"`
	RefillTime   int64  `json:"refill_time"` // milliseconds
}

// RateLimiter limits bytes/s (Bandwidth) and operations/s (Ops).
type RateLimiter struct {
	Bandwidth *TokenBucket `json:"bandwidth,omitempty"`
	Ops       *TokenBucket `json:"ops,omitempty"`
}

// Drive is PUT /drives/{drive_id} for a virtio-block device. DriveID must
// match [A-Za-z0-9_]+; Firecracker opens PathOnHost at PUT time.
type Drive struct {
	DriveID      string       `json:"drive_id"`
	PathOnHost   string       `json:"path_on_host"`
	IsRootDevice bool         `json:"is_root_device"`
	IsReadOnly   bool         `json:"is_read_only"`
	PartUUID     string       `json:"partuuid,omitempty"`
	CacheType    string       `json:"cache_type,omitempty"` // "Unsafe" | "Writeback"
	IOEngine     string       `json:"io_engine,omitempty"`  // "Sync" | "Async"
	RateLimiter  *RateLimiter `json:"rate_limiter,omitempty"`
}

// NetworkInterface is PUT /network-interfaces/{iface_id}. Firecracker opens
// the tap named HostDevName (at most 15 characters) at PUT time.
type NetworkInterface struct {
	IfaceID       string       `json:"iface_id"`
	HostDevName   string       `json:"host_dev_name"`
	GuestMAC      string       `json:"guest_mac,omitempty"`
	MTU           int          `json:"mtu,omitempty"`
	RxRateLimiter *RateLimiter `json:"rx_rate_limiter,omitempty"`
	TxRateLimiter *RateLimiter `json:"tx_rate_limiter,omitempty"`
}

// Vsock is PUT /vsock. Firecracker binds UDSPath at PUT time; GuestCID >= 3.
type Vsock struct {
	GuestCID uint32 `json:"guest_cid"`
	UDSPath  string `json:"uds_path"`
}

// Logger is PUT /logger. Level is one of Error, Warning, Info, Debug, Trace,
// Off (any case).
type Logger struct {
	LogPath       string `json:"log_path,omitempty"`
	Level         string `json:"level,omitempty"`
	ShowLevel     *bool  `json:"show_level,omitempty"`
	ShowLogOrigin *bool  `json:"show_log_origin,omitempty"`
	Module        string `json:"module,omitempty"`
}

// Metrics is PUT /metrics; it can be set only once per process.
type Metrics struct {
	MetricsPath string `json:"metrics_path"`
}

// InstanceInfo is GET /.
type InstanceInfo struct {
	ID         string `json:"id"`
	State      string `json:"state"`
	VMMVersion string `json:"vmm_version"`
	AppName    string `json:"app_name"`
}

// SnapshotCreate is PUT /snapshot/create; the VM must be paused.
type SnapshotCreate struct {
	SnapshotPath string `json:"snapshot_path"`
	MemFilePath  string `json:"mem_file_path"`
	SnapshotType string `json:"snapshot_type,omitempty"` // "Full" (default) | "Diff"
}

// MemoryBackend names where a snapshot's guest memory comes from.
type MemoryBackend struct {
	BackendType string `json:"backend_type"` // "File" | "Uffd"
	BackendPath string `json:"backend_path"`
}

// NetworkOverride swaps the tap of an interface on snapshot restore.
type NetworkOverride struct {
	IfaceID     string `json:"iface_id"`
	HostDevName string `json:"host_dev_name"`
}

// VsockOverride swaps the vsock UDS path on snapshot restore.
type VsockOverride struct {
	UDSPath string `json:"uds_path"`
}

// SnapshotLoad is PUT /snapshot/load. Exactly one of MemBackend and the
// deprecated MemFilePath must be set. A failed load is fatal to the process.
type SnapshotLoad struct {
	SnapshotPath     string            `json:"snapshot_path"`
	MemFilePath      string            `json:"mem_file_path,omitempty"`
	MemBackend       *MemoryBackend    `json:"mem_backend,omitempty"`
	TrackDirtyPages  bool              `json:"track_dirty_pages,omitempty"`
	ResumeVM         bool              `json:"resume_vm,omitempty"`
	NetworkOverrides []NetworkOverride `json:"network_overrides,omitempty"`
	VsockOverride    *VsockOverride    `json:"vsock_override,omitempty"`
	ClockRealtime    bool              `json:"clock_realtime,omitempty"`
}

// VersionInfo is GET /version.
type VersionInfo struct {
	FirecrackerVersion string `json:"firecracker_version"`
}

type vmState struct {
	State string `json:"state"`
}

type instanceAction struct {
	ActionType string `json:"action_type"`
}

type faultBody struct {
	FaultMessage string `json:"fault_message"`
}
