package main

import (
	"os"
	"strings"
)

// Pre-boot resources (SEMANTICS.md §5). Each PUT is validated at once and,
// like Firecracker, opens what it names now.

func (v *vmm) putMachine(body []byte, patch bool) error {
	var b machineConfigBody
	if patch {
		// PATCH takes any subset: decode into the same shape without
		// the required markers.
		var p struct {
			VcpuCount       *uint8  `json:"vcpu_count"`
			MemSizeMib      *uint64 `json:"mem_size_mib"`
			SMT             *bool   `json:"smt"`
			TrackDirtyPages *bool   `json:"track_dirty_pages"`
			HugePages       *string `json:"huge_pages"`
			CPUTemplate     *string `json:"cpu_template"`
		}
		if err := decodeBody(body, &p); err != nil {
			return err
		}
		b = machineConfigBody(p)
		if b == (machineConfigBody{}) {
			return fault("Empty PATCH request.")
		}
	} else if err := decodeBody(body, &b); err != nil {
		return err
	}
	if v.started {
		return fault(errAfterStart)
	}
	m := defaultMachine()
	if patch {
		m = v.machine
	}
	if b.VcpuCount != nil {
		m.VcpuCount = *b.VcpuCount
	}
	if b.MemSizeMib != nil {
		m.MemSizeMib = *b.MemSizeMib
	}
	if b.SMT != nil {
		m.SMT = *b.SMT
	}
	if b.TrackDirtyPages != nil {
		m.TrackDirtyPages = *b.TrackDirtyPages
	}
	if b.HugePages != nil {
		if err := oneOf(*b.HugePages, "None", "2M"); err != nil {
			return err
		}
		m.HugePages = *b.HugePages
	}
	if b.CPUTemplate != nil {
		if err := oneOf(*b.CPUTemplate, "C3", "T2", "T2S", "T2CL", "T2A", "V1N1", "None"); err != nil {
			return err
		}
		m.CPUTemplate = *b.CPUTemplate
		if m.CPUTemplate == "None" {
			m.CPUTemplate = ""
		}
	}
	if err := checkMachine(m); err != nil {
		return err
	}
	v.machine = m
	v.bootConfigured = true
	return nil
}

func (v *vmm) putBootSource(body []byte) error {
	var b bootSourceBody
	if err := decodeBody(body, &b); err != nil {
		return err
	}
	if v.started {
		return fault(errAfterStart)
	}
	bs, err := openBootSource(*b.KernelImagePath, deref(b.InitrdPath), b.BootArgs)
	if err != nil {
		return err
	}
	if v.boot != nil {
		v.boot.close()
	}
	v.boot = bs
	v.bootConfigured = true
	return nil
}

func openBootSource(kernel, initrd string, bootArgs *string) (*bootSource, error) {
	bs := &bootSource{KernelImagePath: kernel, InitrdPath: initrd, BootArgs: bootArgs}
	var err error
	if bs.kernel, err = os.Open(kernel); err != nil {
		return nil, fault("The kernel file cannot be opened: %s", osError(err))
	}
	if initrd != "" {
		if bs.initrd, err = os.Open(initrd); err != nil {
			bs.close()
			return nil, fault("The initrd file cannot be opened due to invalid path or invalid permissions. %s", osError(err))
		}
	}
	return bs, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func (v *vmm) putDrive(pathID string, body []byte) error {
	var b driveBody
	if err := decodeBody(body, &b); err != nil {
		return err
	}
	if err := checkPathID(pathID, b.DriveID); err != nil {
		return err
	}
	if v.started {
		return fault(errAfterStart)
	}
	d := &drive{DriveID: *b.DriveID, IsRootDevice: *b.IsRootDevice, IsReadOnly: b.IsReadOnly != nil && *b.IsReadOnly,
		PartUUID: deref(b.PartUUID), CacheType: "Unsafe", IOEngine: "Sync"}
	if b.CacheType != nil {
		if err := oneOf(*b.CacheType, "Unsafe", "Writeback"); err != nil {
			return err
		}
		d.CacheType = *b.CacheType
	}
	if b.IOEngine != nil {
		if err := oneOf(*b.IOEngine, "Sync", "Async"); err != nil {
			return err
		}
		d.IOEngine = *b.IOEngine
	}
	switch {
	case b.Socket != nil:
		return fault("fcfake does not implement vhost-user block devices (socket %q)", *b.Socket)
	case b.PathOnHost == nil:
		return fault("Unable to create the virtio block device: missing field `path_on_host`")
	}
	d.PathOnHost = *b.PathOnHost
	if d.IsRootDevice {
		for _, o := range v.drives {
			if o.IsRootDevice && o.DriveID != d.DriveID {
				return fault("A root block device already exists!")
			}
		}
	}
	if err := d.open(); err != nil {
		return err
	}
	v.replaceDrive(d)
	v.bootConfigured = true
	return nil
}

// open opens the backing file read-write unless the drive is read-only, so
// permission problems show up at PUT time as with the real one.
func (d *drive) open() error {
	flag := os.O_RDWR
	if d.IsReadOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(d.PathOnHost, flag, 0)
	if err != nil {
		return fault("Unable to create the block device: BackingFile(%s, %q)", osError(err), d.PathOnHost)
	}
	d.f = f
	return nil
}

// replaceDrive adds d, or replaces the drive with the same id; the root
// device is kept first (it becomes /dev/vda).
func (v *vmm) replaceDrive(d *drive) {
	var kept []*drive
	for _, o := range v.drives {
		if o.DriveID == d.DriveID {
			o.f.Close()
			continue
		}
		kept = append(kept, o)
	}
	if d.IsRootDevice {
		v.drives = append([]*drive{d}, kept...)
	} else {
		v.drives = append(kept, d)
	}
}

func (v *vmm) patchDrive(pathID string, body []byte) error {
	var b partialDriveBody
	if err := decodeBody(body, &b); err != nil {
		return err
	}
	if err := checkPathID(pathID, b.DriveID); err != nil {
		return err
	}
	if !v.started {
		return fault(errBeforeStart)
	}
	for _, d := range v.drives {
		if d.DriveID != pathID {
			continue
		}
		if b.PathOnHost != nil {
			nd := *d
			nd.PathOnHost = *b.PathOnHost
			if err := nd.open(); err != nil {
				return err
			}
			d.f.Close()
			*d = nd
		}
		return nil
	}
	return fault("Unable to patch the block device: device with id %s not found", pathID)
}

func (v *vmm) putNet(pathID string, body []byte) error {
	var b netBody
	if err := decodeBody(body, &b); err != nil {
		return err
	}
	if err := checkPathID(pathID, b.IfaceID); err != nil {
		return err
	}
	if v.started {
		return fault(errAfterStart)
	}
	n := &netIface{IfaceID: *b.IfaceID, HostDevName: *b.HostDevName, GuestMAC: deref(b.GuestMAC)}
	if b.MTU != nil {
		if *b.MTU < 68 || *b.MTU > 65535 {
			return fault("Invalid MTU %d: must be between 68 and 65535.", *b.MTU)
		}
		n.MTU = *b.MTU
	}
	if n.GuestMAC != "" {
		if !macAddr.MatchString(n.GuestMAC) {
			return fault("Invalid MAC address: %s", n.GuestMAC)
		}
		for _, o := range v.ifaces {
			if o.IfaceID != n.IfaceID && strings.EqualFold(o.GuestMAC, n.GuestMAC) {
				return fault("Could not create the network device: The MAC address is already in use: %s", n.GuestMAC)
			}
		}
	}
	// Firecracker drops a device with the same id before building the new one.
	v.removeIface(n.IfaceID)
	tap, err := openTap(n.HostDevName)
	if err != nil {
		return fault("Could not create the network device: Open tap device failed: Error while creating ifreq structure: %s. Invalid TUN/TAP Backend provided by %s. Check our documentation on setting up the network devices.",
			osError(err), n.HostDevName)
	}
	n.tap = tap
	v.ifaces = append(v.ifaces, n)
	v.bootConfigured = true
	return nil
}

func (v *vmm) removeIface(id string) {
	kept := v.ifaces[:0]
	for _, o := range v.ifaces {
		if o.IfaceID == id {
			o.tap.Close()
			continue
		}
		kept = append(kept, o)
	}
	v.ifaces = kept
}

func (v *vmm) patchNet(pathID string, body []byte) error {
	var b partialNetBody
	if err := decodeBody(body, &b); err != nil {
		return err
	}
	if err := checkPathID(pathID, b.IfaceID); err != nil {
		return err
	}
	if !v.started {
		return fault(errBeforeStart)
	}
	for _, n := range v.ifaces {
		if n.IfaceID == pathID {
			return nil // rate limiters only; the fake moves no traffic
		}
	}
	return fault("Network interface update error: device with id %s not found", pathID)
}

func (v *vmm) putLogger(body []byte) error {
	var b loggerBody
	if err := decodeBody(body, &b); err != nil {
		return err
	}
	if v.started {
		return fault(errAfterStart)
	}
	level := levelInfo
	if b.Level != nil {
		l, ok := parseLevel(*b.Level)
		if !ok {
			return fault("unknown variant `%s`, expected one of `Error`, `Warning`, `Info`, `Debug`, `Trace`, `Off`", *b.Level)
		}
		level = l
	}
	if b.LogPath != nil {
		f, err := openLogPath(*b.LogPath)
		if err != nil {
			return fault("Failed to open target file: %s", osError(err))
		}
		v.log.setFile(f)
	}
	v.log.configure(level, b.ShowLevel != nil && *b.ShowLevel, b.ShowLogOrigin != nil && *b.ShowLogOrigin)
	return nil
}

func (v *vmm) putMetrics(body []byte) error {
	var b metricsBody
	if err := decodeBody(body, &b); err != nil {
		return err
	}
	if v.started {
		return fault(errAfterStart)
	}
	if v.metrics != nil {
		return fault("Reinitialization of metrics not allowed.")
	}
	f, err := openLogPath(*b.MetricsPath)
	if err != nil {
		return fault("Failed to open target file: %s", osError(err))
	}
	v.metrics = f
	return nil
}
