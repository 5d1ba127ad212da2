// Package api is the wire contract between bangerd and its clients: JSON-RPC
// method names, parameter and result types, events and error kinds. It uses
// the standard library only.
package api

import (
	"encoding/json"
	"time"
)

// Methods. Names are noun.verb.
const (
	MethodDaemonStatus  = "daemon.status"
	MethodDaemonStop    = "daemon.stop"
	MethodVMCreate      = "vm.create"
	MethodVMStart       = "vm.start"
	MethodVMStop        = "vm.stop"
	MethodVMRestart     = "vm.restart"
	MethodVMKill        = "vm.kill"
	MethodVMDelete      = "vm.delete"
	MethodVMSet         = "vm.set"
	MethodVMList        = "vm.list"
	MethodVMGet         = "vm.get"
	MethodVMHealth      = "vm.health"
	MethodVMStats       = "vm.stats"
	MethodVMTouch       = "vm.touch"
	MethodVMExec        = "vm.exec"
	MethodVMPause       = "vm.pause"
	MethodVMResume      = "vm.resume"
	MethodVMSuspend     = "vm.suspend"
	MethodImageBuild    = "image.build"
	MethodImageRegister = "image.register"
	MethodImageVerify   = "image.verify"
	MethodImageList     = "image.list"
	MethodImageDelete   = "image.delete"
)

// Paths on the daemon socket.
const (
	PathRPC    = "/rpc"
	PathEvents = "/events"
)

// MaxRequestBytes bounds a request body on the daemon socket.
const MaxRequestBytes = 1 << 20

// VM states.
const (
	StateCreated  = "created"
	StateStarting = "starting"
	StateRunning  = "running"
	StateStopping = "stopping"
	StateStopped  = "stopped"
	StateError    = "error"
	// StatePaused: the Firecracker process lives, its vCPUs are paused
	// (PATCH /vm); DNS and forwards stay.
	StatePaused = "paused"
	// StateSuspended: no process; the guest's memory and VM state are in a
	// snapshot in the VM directory, restored by the next vm start.
	StateSuspended = "suspended"
)

// ValidStates lists every VM state.
func ValidStates() []string {
	return []string{StateCreated, StateStarting, StateRunning, StateStopping, StateStopped, StateError, StatePaused, StateSuspended}
}

// Request is a JSON-RPC 2.0 request.
type Request struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id,omitempty"`
	Method  string          `json:"method"`
	Params  json.RawMessage `json:"params,omitempty"`
}

// Response is a JSON-RPC 2.0 response.
type Response struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Result  json.RawMessage `json:"result,omitempty"`
	Error   *Error          `json:"error,omitempty"`
}

// Error kinds carried in Error.Data.Kind.
const (
	KindNotFound    = "not_found"
	KindInvalid     = "invalid"
	KindConflict    = "conflict"
	KindBusy        = "busy"
	KindUnavailable = "unavailable"
	KindInternal    = "internal"
)

// JSON-RPC error codes.
const (
	CodeParse          = -32700
	CodeInvalidRequest = -32600
	CodeMethodNotFound = -32601
	CodeInvalidParams  = -32602
	CodeInternal       = -32603
	CodeApplication    = -32000
)

// Error is a JSON-RPC error object. Data.Kind classifies it.
type Error struct {
	Code    int       `json:"code"`
	Message string    `json:"message"`
	Data    ErrorData `json:"data"`
}

// ErrorData carries the banger error kind.
type ErrorData struct {
	Kind string `json:"kind"`
}

func (e *Error) Error() string { return e.Message }

// DaemonStatus is the result of daemon.status.
type DaemonStatus struct {
	PID        int            `json:"pid"`
	Version    string         `json:"version"`
	Commit     string         `json:"commit"`
	Socket     string         `json:"socket"`
	StateDir   string         `json:"state_dir"`
	StartedAt  time.Time      `json:"started_at"`
	UptimeS    float64        `json:"uptime_s"`
	DNSListen  []string       `json:"dns_listen,omitempty"`
	DNSProblem string         `json:"dns_problem,omitempty"` // why dns_listen_addr is not served (port taken)
	VMCounts   map[string]int `json:"vm_counts"`
	Euid       int            `json:"euid"`
	Privileged string         `json:"privileged"` // "in-process" or "sudo"
}

// VM is a VM as clients see it.
type VM struct {
	ID             string    `json:"id"`
	Name           string    `json:"name"`
	State          string    `json:"state"`
	LastError      string    `json:"last_error,omitempty"`
	StopReason     string    `json:"stop_reason,omitempty"`
	Image          string    `json:"image"`
	VCPU           int       `json:"vcpu"`
	MemoryMiB      int       `json:"memory_mib"`
	DiskBytes      int64     `json:"disk_bytes"`
	WorkDiskBytes  int64     `json:"work_disk_bytes"`
	NAT            bool      `json:"nat"`
	IP             string    `json:"ip"`
	MAC            string    `json:"mac"`
	Tap            string    `json:"tap"`
	CID            uint32    `json:"cid"`
	PID            int       `json:"pid,omitempty"`
	Dir            string    `json:"dir"`
	APISocket      string    `json:"api_socket"`
	VsockPath      string    `json:"vsock_path"`
	RootDisk       string    `json:"root_disk"`
	WorkDisk       string    `json:"work_disk"`
	StorageDriver  string    `json:"storage_driver"`
	DNSName        string    `json:"dns_name"`
	CreatedAt      time.Time `json:"created_at"`
	StartedAt      time.Time `json:"started_at,omitzero"`
	LastUsedAt     time.Time `json:"last_used_at,omitzero"`
	PendingChanges []string  `json:"pending_changes,omitempty"`
	Forwards       []Forward `json:"forwards,omitempty"` // held while it runs (see vm.ports)
	// Snapshot is the suspended VM's snapshot (nil unless suspended).
	Snapshot *Snapshot `json:"snapshot,omitempty"`
}

// Snapshot describes a suspended VM's snapshot.
type Snapshot struct {
	CreatedAt   time.Time `json:"created_at"`
	Firecracker string    `json:"firecracker_version"`
	// DiskBytes is what its files take on disk (allocated blocks); the
	// memory file is sparse where the guest's pages are zero.
	DiskBytes int64 `json:"disk_bytes"`
	// MemoryBytes is the guest memory size (the memory file's length).
	MemoryBytes int64 `json:"memory_bytes"`
}

// VMStartParams are vm.start's params. Cold discards a suspended VM's
// snapshot and boots afresh.
type VMStartParams struct {
	Ref  string `json:"ref"`
	Cold bool   `json:"cold,omitempty"`
}

// Image is an image as clients see it.
type Image struct {
	ID           string    `json:"id"`
	Name         string    `json:"name"`
	RootfsPath   string    `json:"rootfs_path"`
	KernelPath   string    `json:"kernel_path,omitempty"`
	InitrdPath   string    `json:"initrd_path,omitempty"`
	ModulesDir   string    `json:"modules_dir,omitempty"`
	SizeBytes    int64     `json:"size_bytes"`
	PackagesHash string    `json:"packages_hash,omitempty"`
	Stale        bool      `json:"stale"`
	CreatedAt    time.Time `json:"created_at"`
}

// VMCreateParams are vm.create's params. Optional numbers are pointers:
// nil means the configured default, an explicit 0 is rejected.
type VMCreateParams struct {
	Name         string `json:"name,omitempty"`
	Image        string `json:"image,omitempty"`
	VCPU         *int   `json:"vcpu,omitempty"`
	MemoryMiB    *int   `json:"memory_mib,omitempty"`
	DiskSize     string `json:"disk_size,omitempty"`
	WorkDiskSize string `json:"work_disk_size,omitempty"`
	NAT          bool   `json:"nat,omitempty"`
	NoStart      bool   `json:"no_start,omitempty"`
	// Publish holds "[ADDR:]HOST:GUEST" ports to forward while it runs.
	Publish []string `json:"publish,omitempty"`
}

// ExecTarget is the result of vm.exec: where the client dials the VM's
// guest agent to run a command (Firecracker's hybrid vsock: connect to
// VsockPath, send "CONNECT <AgentPort>\n").
type ExecTarget struct {
	VM        VM     `json:"vm"`
	VsockPath string `json:"vsock_path"`
	AgentPort uint32 `json:"agent_port"`
	// Protocol is the guest agent's protocol version.
	Protocol int `json:"protocol"`
}

// VMRef names one VM by exact name or ID.
type VMRef struct {
	Ref string `json:"ref"`
}

// VMStopParams are vm.stop's params.
type VMStopParams struct {
	Ref string `json:"ref"`
}

// VMKillParams are vm.kill's params. Signal defaults to SIGKILL.
type VMKillParams struct {
	Ref    string `json:"ref"`
	Signal string `json:"signal,omitempty"`
}

// VMSetParams are vm.set's params.
type VMSetParams struct {
	Ref          string `json:"ref"`
	VCPU         *int   `json:"vcpu,omitempty"`
	MemoryMiB    *int   `json:"memory_mib,omitempty"`
	NAT          *bool  `json:"nat,omitempty"`
	WorkDiskSize string `json:"work_disk_size,omitempty"`
	// Publish adds "[ADDR:]HOST:GUEST" ports; Unpublish removes "[ADDR:]HOST".
	Publish   []string `json:"publish,omitempty"`
	Unpublish []string `json:"unpublish,omitempty"`
	// DiscardSnapshot allows a change that invalidates a suspended VM's
	// snapshot (vcpu, memory, work disk size): the snapshot is discarded.
	DiscardSnapshot bool `json:"discard_snapshot,omitempty"`
}

// VMResult wraps a VM plus what an operation noticed.
type VMResult struct {
	VM      VM       `json:"vm"`
	Health  *Health  `json:"health,omitempty"`
	Notices []string `json:"notices,omitempty"`
}

// VMList is vm.list's result.
type VMList struct {
	VMs []VM `json:"vms"`
}

// VMListParams are vm.list's params. Table asks for the members `vm list`'s
// table shows and nothing else (VMTable): with 500 VMs the whole reply is
// 250 KB the daemon builds and encodes and the CLI reads through, for
// columns it does not print. A daemon older than Table refuses the param
// as invalid; callers then ask again without it.
type VMListParams struct {
	Table bool `json:"table,omitempty"`
}

// VMTable is vm.list's result for {table: true}.
type VMTable struct {
	VMs []VMRow `json:"vms"`
}

// VMRow is one VM as `vm list` (and `-o wide`) shows it: the VM members of
// the same names, with the same values.
type VMRow struct {
	ID            string    `json:"id"`
	Name          string    `json:"name"`
	State         string    `json:"state"`
	Image         string    `json:"image"`
	VCPU          int       `json:"vcpu"`
	MemoryMiB     int       `json:"memory_mib"`
	DiskBytes     int64     `json:"disk_bytes"`
	WorkDiskBytes int64     `json:"work_disk_bytes"`
	NAT           bool      `json:"nat"`
	IP            string    `json:"ip"`
	CreatedAt     time.Time `json:"created_at"`
	LastUsedAt    time.Time `json:"last_used_at,omitzero"`
	Snapshot      *Snapshot `json:"snapshot,omitempty"`
}

// Health is vm.health's result.
type Health struct {
	VM        string  `json:"vm"`
	Healthy   bool    `json:"healthy"`
	Reason    string  `json:"reason,omitempty"`
	RTTMillis float64 `json:"rtt_ms,omitempty"`
	UptimeS   float64 `json:"uptime_s,omitempty"`
	Version   string  `json:"version,omitempty"`
	Hostname  string  `json:"hostname,omitempty"`
	State     string  `json:"state"`
}

// Stats is one VM's process statistics.
type Stats struct {
	VM         string    `json:"vm"`
	Name       string    `json:"name"`
	State      string    `json:"state"`
	PID        int       `json:"pid,omitempty"`
	CPUPercent float64   `json:"cpu_percent"`
	RSSBytes   int64     `json:"rss_bytes"`
	SampledAt  time.Time `json:"sampled_at,omitzero"`
	// Balloon is the guest's memory as its balloon driver reports it;
	// absent when the VM has no balloon (balloon = "off", or a Firecracker
	// without free page reporting under "auto") or is not running.
	Balloon *BalloonStats `json:"balloon,omitempty"`
}

// BalloonStats are a VM's balloon statistics (Firecracker's
// /balloon/statistics): the balloon's size and the guest's memory figures.
type BalloonStats struct {
	TargetMiB      int64 `json:"target_mib"`
	ActualMiB      int64 `json:"actual_mib"`
	TotalBytes     int64 `json:"total_bytes,omitempty"`
	FreeBytes      int64 `json:"free_bytes,omitempty"`
	AvailableBytes int64 `json:"available_bytes,omitempty"`
	CachesBytes    int64 `json:"caches_bytes,omitempty"`
	SwapInBytes    int64 `json:"swap_in_bytes,omitempty"`
	SwapOutBytes   int64 `json:"swap_out_bytes,omitempty"`
	MajorFaults    int64 `json:"major_faults,omitempty"`
	MinorFaults    int64 `json:"minor_faults,omitempty"`
	OOMKills       int64 `json:"oom_kills,omitempty"`
}

// StatsList is vm.stats's result.
type StatsList struct {
	Stats []Stats `json:"stats"`
}

// StatsParams are vm.stats's params; empty Refs means every VM.
type StatsParams struct {
	Refs []string `json:"refs,omitempty"`
}

// ImageList is image.list's result.
type ImageList struct {
	Images []Image `json:"images"`
}

// ImageRef names one image.
type ImageRef struct {
	Name string `json:"name"`
}

// ImageRegisterParams are image.register's params.
type ImageRegisterParams struct {
	Name       string `json:"name"`
	RootfsPath string `json:"rootfs_path"`
	KernelPath string `json:"kernel_path,omitempty"`
	InitrdPath string `json:"initrd_path,omitempty"`
	ModulesDir string `json:"modules_dir,omitempty"`
}

// Event kinds on GET /events.
const (
	EventVMState    = "vm.state"
	EventVMProgress = "vm.progress"
	EventVMDeleted  = "vm.deleted"
	EventImage      = "image.progress"
	// EventVMProgressEnd follows the last vm.progress event of one
	// vm.create, vm.start or vm.restart call and is published before the
	// call's reply: a client that has the reply and this event has every
	// stage of that call. VMID and VM name the VM when the daemon knows it;
	// otherwise Ref is the name or reference the call was given.
	EventVMProgressEnd = "vm.progress.end"
)

// Event is one JSON line on GET /events.
type Event struct {
	Kind    string    `json:"kind"`
	Time    time.Time `json:"time"`
	VM      *VM       `json:"vm,omitempty"`
	VMID    string    `json:"vm_id,omitempty"`
	Stage   string    `json:"stage,omitempty"`
	Message string    `json:"message,omitempty"`
	Elapsed float64   `json:"elapsed_s,omitempty"`
	Forward *Forward  `json:"forward,omitempty"` // EventVMForward
	Ref     string    `json:"ref,omitempty"`
}
