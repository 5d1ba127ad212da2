package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strings"
)

// Request bodies of the v1.16.1 API (firecracker-api-v1.16.1.yaml). Every
// field is a pointer or slice so "omitted" is visible; fields the spec marks
// required carry `fc:"required"`.

type machineConfigBody struct {
	VcpuCount       *uint8  `json:"vcpu_count" fc:"required"`
	MemSizeMib      *uint64 `json:"mem_size_mib" fc:"required"`
	SMT             *bool   `json:"smt"`
	TrackDirtyPages *bool   `json:"track_dirty_pages"`
	HugePages       *string `json:"huge_pages"`
	CPUTemplate     *string `json:"cpu_template"`
}

type bootSourceBody struct {
	KernelImagePath *string `json:"kernel_image_path" fc:"required"`
	InitrdPath      *string `json:"initrd_path"`
	BootArgs        *string `json:"boot_args"`
}

type tokenBucket struct {
	Size         *uint64 `json:"size" fc:"required"`
	OneTimeBurst *uint64 `json:"one_time_burst"`
	RefillTime   *uint64 `json:"refill_time" fc:"required"`
}

type rateLimiter struct {
	Bandwidth *tokenBucket `json:"bandwidth"`
	Ops       *tokenBucket `json:"ops"`
}

type driveBody struct {
	DriveID      *string      `json:"drive_id" fc:"required"`
	PartUUID     *string      `json:"partuuid"`
	IsRootDevice *bool        `json:"is_root_device" fc:"required"`
	CacheType    *string      `json:"cache_type"`
	IsReadOnly   *bool        `json:"is_read_only"`
	PathOnHost   *string      `json:"path_on_host"`
	RateLimiter  *rateLimiter `json:"rate_limiter"`
	IOEngine     *string      `json:"io_engine"`
	Socket       *string      `json:"socket"`
}

type partialDriveBody struct {
	DriveID     *string      `json:"drive_id" fc:"required"`
	PathOnHost  *string      `json:"path_on_host"`
	RateLimiter *rateLimiter `json:"rate_limiter"`
}

type netBody struct {
	IfaceID       *string      `json:"iface_id" fc:"required"`
	HostDevName   *string      `json:"host_dev_name" fc:"required"`
	GuestMAC      *string      `json:"guest_mac"`
	MTU           *int64       `json:"mtu"`
	RxRateLimiter *rateLimiter `json:"rx_rate_limiter"`
	TxRateLimiter *rateLimiter `json:"tx_rate_limiter"`
}

type partialNetBody struct {
	IfaceID       *string      `json:"iface_id" fc:"required"`
	RxRateLimiter *rateLimiter `json:"rx_rate_limiter"`
	TxRateLimiter *rateLimiter `json:"tx_rate_limiter"`
}

type vsockBody struct {
	GuestCID *uint32 `json:"guest_cid" fc:"required"`
	UDSPath  *string `json:"uds_path" fc:"required"`
	VsockID  *string `json:"vsock_id"`
}

type loggerBody struct {
	Level         *string `json:"level"`
	LogPath       *string `json:"log_path"`
	ShowLevel     *bool   `json:"show_level"`
	ShowLogOrigin *bool   `json:"show_log_origin"`
	Module        *string `json:"module"`
}

type metricsBody struct {
	MetricsPath *string `json:"metrics_path" fc:"required"`
}

type actionBody struct {
	ActionType *string `json:"action_type" fc:"required"`
}

type vmStateBody struct {
	State *string `json:"state" fc:"required"`
}

type snapshotCreateBody struct {
	MemFilePath  *string `json:"mem_file_path" fc:"required"`
	SnapshotPath *string `json:"snapshot_path" fc:"required"`
	SnapshotType *string `json:"snapshot_type"`
}

type memBackendBody struct {
	BackendType *string `json:"backend_type" fc:"required"`
	BackendPath *string `json:"backend_path" fc:"required"`
}

type networkOverrideBody struct {
	IfaceID     *string `json:"iface_id" fc:"required"`
	HostDevName *string `json:"host_dev_name" fc:"required"`
}

type vsockOverrideBody struct {
	UDSPath *string `json:"uds_path" fc:"required"`
}

type snapshotLoadBody struct {
	EnableDiffSnapshots *bool                 `json:"enable_diff_snapshots"`
	TrackDirtyPages     *bool                 `json:"track_dirty_pages"`
	MemFilePath         *string               `json:"mem_file_path"`
	MemBackend          *memBackendBody       `json:"mem_backend"`
	SnapshotPath        *string               `json:"snapshot_path" fc:"required"`
	ResumeVM            *bool                 `json:"resume_vm"`
	NetworkOverrides    []networkOverrideBody `json:"network_overrides"`
	VsockOverride       *vsockOverrideBody    `json:"vsock_override"`
	ClockRealtime       *bool                 `json:"clock_realtime"`
}

// decodeBody decodes a request body into v (a pointer to one of the body
// structs) as strictly as Firecracker's serde does: field names are matched
// exactly (encoding/json alone would match them case-insensitively), unknown
// fields and trailing data are rejected, and required fields must be present.
func decodeBody(b []byte, v any) error {
	if err := checkKeys(b, reflect.TypeOf(v).Elem()); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), "json: "))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("trailing characters after the JSON body")
	}
	return checkRequired(reflect.ValueOf(v).Elem())
}

func jsonName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	return name
}

// checkKeys rejects object keys that are not exactly a field of t.
func checkKeys(raw []byte, t reflect.Type) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		var obj map[string]json.RawMessage
		if json.Unmarshal(raw, &obj) != nil || obj == nil {
			return nil // not an object: the decoder reports the type error
		}
		fields := map[string]reflect.Type{}
		var names []string
		for i := range t.NumField() {
			f := t.Field(i)
			fields[jsonName(f)] = f.Type
			names = append(names, "`"+jsonName(f)+"`")
		}
		for k, v := range obj {
			ft, ok := fields[k]
			if !ok {
				return fmt.Errorf("unknown field `%s`, expected one of %s", k, strings.Join(names, ", "))
			}
			if err := checkKeys(v, ft); err != nil {
				return err
			}
		}
	case reflect.Slice:
		var items []json.RawMessage
		if json.Unmarshal(raw, &items) != nil {
			return nil
		}
		for _, it := range items {
			if err := checkKeys(it, t.Elem()); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkRequired reports the first required field that is missing (or null).
func checkRequired(v reflect.Value) error {
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			return checkRequired(v.Elem())
		}
	case reflect.Slice:
		for i := range v.Len() {
			if err := checkRequired(v.Index(i)); err != nil {
				return err
			}
		}
	case reflect.Struct:
		for i := range v.NumField() {
			f := v.Type().Field(i)
			fv := v.Field(i)
			if f.Tag.Get("fc") == "required" && fv.Kind() == reflect.Pointer && fv.IsNil() {
				return fmt.Errorf("missing field `%s`", jsonName(f))
			}
			if err := checkRequired(fv); err != nil {
				return err
			}
		}
	}
	return nil
}

// oneOf checks an enum value the way serde reports a bad variant.
func oneOf(val string, allowed ...string) error {
	for _, a := range allowed {
		if val == a {
			return nil
		}
	}
	return fmt.Errorf("unknown variant `%s`, expected one of `%s`", val, strings.Join(allowed, "`, `"))
}

// resourceID matches the ids Firecracker accepts in paths and bodies.
var resourceID = regexp.MustCompile(`^[A-Za-z0-9_]+$`)

// checkPathID validates a path id and compares it with the body's id.
func checkPathID(pathID string, bodyID *string) error {
	if pathID == "" {
		return errors.New("Empty ID in request.")
	}
	if !resourceID.MatchString(pathID) {
		return errors.New("API Resource IDs can only contain alphanumeric characters and underscores.")
	}
	if bodyID != nil && *bodyID != pathID {
		return errors.New("The id from the path does not match the id from the body!")
	}
	return nil
}

// macAddr matches a MAC in the form Firecracker parses.
var macAddr = regexp.MustCompile(`^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$`)

// The vCPU and memory checks of PUT/PATCH /machine-config.
func checkMachine(m machineConfig) error {
	if m.VcpuCount < 1 || m.VcpuCount > 32 || (m.SMT && m.VcpuCount > 1 && m.VcpuCount%2 != 0) {
		return errors.New("The vCPU number is invalid! The vCPU number can only be 1 or an even number when SMT is enabled.")
	}
	if m.MemSizeMib == 0 {
		return errors.New("The memory size (MiB) is invalid.")
	}
	if m.HugePages == "2M" && m.MemSizeMib%2 != 0 {
		return errors.New("The memory size (MiB) must be a multiple of 2 when 2M huge pages are used.")
	}
	return nil
}
