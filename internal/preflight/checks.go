package preflight

import (
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"banger/internal/capability"
	"banger/internal/hostops"
)

func run(ctx context.Context, env Env, name string) Result {
	c := env.Config
	p := env.Probes
	switch name {
	case KVM:
		if err := p.KVM(); err != nil {
			return kvmFailure(err)
		}
		return Result{Status: Pass, Detail: "/dev/kvm answers (KVM API 12)"}
	case PVM:
		return checkPVM(env)
	case VhostVsock:
		if _, err := os.Stat("/dev/vhost-vsock"); err != nil {
			return Result{Status: Warn, Detail: "/dev/vhost-vsock missing; not needed: Firecracker serves vsock in user space over unix sockets"}
		}
		return Result{Status: Pass, Detail: "/dev/vhost-vsock present"}
	case Firecracker:
		return env.Cache.cached(c.FirecrackerBin, func() Result { return checkFirecracker(ctx, c.FirecrackerBin) })
	case Kernel:
		if err := readable(c.KernelPath); err != nil {
			return Result{Status: Fail, Detail: fmt.Sprintf("kernel %s: %v", c.KernelPath, err), Fix: "install the runtime bundle with `banger runtime install`, or set kernel_path"}
		}
		return Result{Status: Pass, Detail: c.KernelPath}
	case Agent:
		return env.Cache.cached(c.VsockAgentPath, func() Result { return checkAgent(c.VsockAgentPath) })
	case Sudo:
		if os.Geteuid() == 0 {
			return Result{Status: Pass, Detail: "running as root: privileged operations run in-process"}
		}
		if _, err := hostops.Run(ctx, "sudo", "-n", "-l", c.HelperPath, "internal", "ensure-state-dirs"); err != nil {
			return Result{Status: Fail, Detail: fmt.Sprintf("`sudo -n %s internal ...` is not allowed: %s", c.HelperPath, oneLine(err.Error())),
				Fix: "run `sudo make install-helper` in the banger checkout (installs the helper and " + hostops.SudoersPath + ")"}
		}
		return Result{Status: Pass, Detail: "sudo -n may run " + c.HelperPath}
	case DeviceMapper:
		return checkDeviceMapper(env)
	case Loop:
		how, err := p.Loop()
		if err != nil {
			return Result{Status: Warn, Detail: oneLine(err.Error()) + ": the dm driver and /root repair need loop devices", Fix: "sudo modprobe loop"}
		}
		return Result{Status: Pass, Detail: how}
	case Tun:
		if err := p.Tun(); err != nil {
			r := Result{Status: Fail, Detail: reason(err), Fix: "sudo modprobe tun"}
			if strings.Contains(err.Error(), "not read-write") {
				r.Fix = "give it the usual mode (`sudo chmod 0666 /dev/net/tun`) or an ACL (`sudo setfacl -m u:$USER:rw /dev/net/tun`)"
			}
			return r
		}
		return Result{Status: Pass, Detail: "/dev/net/tun opens read-write"}
	case NAT:
		if _, err := os.Stat("/proc/sys/net/ipv4/ip_forward"); err != nil {
			return Result{Status: Warn, Detail: "cannot read net.ipv4.ip_forward: NAT may not work"}
		}
		how, err := p.NFTables()
		if capability.IsUnavailable(err) {
			return Result{Status: Warn, Detail: reason(err) + "; VMs without NAT work regardless",
				Fix: "use a kernel with nf_tables (CONFIG_NF_TABLES), or `sudo modprobe nf_tables` where it is a module"}
		}
		if err != nil {
			return Result{Status: Warn, Detail: oneLine(err.Error()) + "; VMs without NAT work regardless"}
		}
		return Result{Status: Pass, Detail: how}
	case ForwardPolicy:
		if env.ForwardPolicy == nil {
			return Result{Status: Pass, Detail: "not checked"}
		}
		ok, detail, fix, err := env.ForwardPolicy(c.BridgeName)
		if err != nil {
			return Result{Status: Warn, Detail: "could not inspect the FORWARD chains: " + oneLine(err.Error())}
		}
		if !ok {
			return Result{Status: Warn, Detail: detail, Fix: fix}
		}
		return Result{Status: Pass, Detail: "no foreign FORWARD chain drops bridge traffic"}
	case DNSPort:
		return checkDNSPort(env)
	case Debootstrap:
		for _, dir := range []string{"/usr/sbin", "/usr/bin", "/sbin", "/bin"} {
			if _, err := os.Stat(filepath.Join(dir, "debootstrap")); err == nil {
				return Result{Status: Pass, Detail: "debootstrap available for `banger image build debian`"}
			}
		}
		return Result{Status: Warn, Detail: "debootstrap missing: `banger image build debian` needs it", Fix: "sudo apt-get install debootstrap"}
	case StateDir:
		return checkStateDir(env.Paths.StateDir)
	}
	return Result{Status: Fail, Detail: "unknown check " + name}
}

// reason is an *capability.Unavailable's reason, else the error's text.
func reason(err error) string {
	var u *capability.Unavailable
	if errors.As(err, &u) {
		return u.Reason
	}
	return oneLine(err.Error())
}

func kvmFailure(err error) Result {
	r := Result{Status: Fail, Detail: reason(err)}
	switch {
	case strings.Contains(r.Detail, "not read-write"):
		r.Fix = "add yourself to the kvm group (`sudo usermod -aG kvm $USER`, then log in again) or grant an ACL (`sudo setfacl -m u:$USER:rw /dev/kvm`)"
	default:
		r.Fix = "enable virtualisation in the firmware or the hypervisor, load kvm_intel/kvm_amd, then re-run `banger doctor`"
	}
	return r
}

// checkPVM warns on hosts whose /dev/kvm is PVM: there guests need a PVM
// guest kernel and a PVM-capable Firecracker; a stock kernel dies after
// about 17 s with KVM_EXIT_INTERNAL_ERROR.
func checkPVM(env Env) Result {
	pv := env.Probes.PVM()
	if !pv.Active {
		switch {
		case pv.HWFlag != "":
			return Result{Status: Pass, Detail: fmt.Sprintf("hardware virtualisation (%s): stock guest kernels work", pv.HWFlag)}
		case pv.Module:
			return Result{Status: Pass, Detail: "kvm_pvm is loaded but the CPU has no vmx/svm flag either way; not a PVM host"}
		}
		return Result{Status: Pass, Detail: "not a PVM host (no kvm_pvm module)"}
	}
	const need = "guests need a PVM guest kernel (CONFIG_PVM_GUEST=y, CONFIG_X86_PIE=y) and a PVM-capable Firecracker build; a stock kernel dies with KVM_EXIT_INTERNAL_ERROR"
	r := Result{Status: Warn, Detail: "/dev/kvm is PVM here (kvm_pvm loaded, no vmx/svm in /proc/cpuinfo): " + need,
		Fix: "set kernel_path to a kernel built with CONFIG_PVM_GUEST=y and CONFIG_X86_PIE=y, and firecracker_bin to a Firecracker with PVM support"}
	k := env.Config.KernelPath
	cfg, err := env.Probes.KernelConfig(k)
	switch {
	case errors.Is(err, os.ErrNotExist):
		r.Detail += fmt.Sprintf("; kernel %s is not there yet, so banger cannot tell whether it is one", k)
	case errors.Is(err, capability.ErrNoEmbeddedConfig):
		r.Detail += fmt.Sprintf("; kernel %s carries no config, so banger cannot tell whether it is one", k)
	case err != nil:
		r.Detail += fmt.Sprintf("; kernel %s: %v", k, oneLine(err.Error()))
	default:
		var missing []string
		for _, opt := range []string{"CONFIG_PVM_GUEST", "CONFIG_X86_PIE"} {
			if capability.ConfigValue(cfg, opt) != "y" {
				missing = append(missing, opt+"=y")
			}
		}
		if len(missing) == 0 {
			r.Detail = "/dev/kvm is PVM here (kvm_pvm loaded, no vmx/svm in /proc/cpuinfo); kernel " + k + " is a PVM guest kernel (CONFIG_PVM_GUEST=y, CONFIG_X86_PIE=y); Firecracker must be a PVM-capable build too"
			r.Fix = "make sure firecracker_bin is a Firecracker build with PVM support"
		} else {
			r.Detail += fmt.Sprintf("; kernel %s lacks %s, so its VMs will not boot", k, strings.Join(missing, " and "))
		}
	}
	return r
}

// checkDeviceMapper reports what the daemon's storage driver choice sees
// (storage.Detect asks the same probe), and fails when storage_driver
// insists on dm without it.
func checkDeviceMapper(env Env) Result {
	how, err := env.Probes.DeviceMapper()
	switch env.Config.StorageDriver {
	case "copy":
		if err != nil {
			return Result{Status: Pass, Detail: "storage_driver = copy; device-mapper not used (" + reason(err) + ")"}
		}
		return Result{Status: Pass, Detail: "storage_driver = copy; device-mapper not used (" + how + ")"}
	case "dm":
		if err != nil {
			return Result{Status: Fail, Detail: "storage_driver = dm but " + reason(err),
				Fix: "set storage_driver = \"auto\" or \"copy\", or use a kernel with device-mapper (dm_mod, dm_snapshot)"}
		}
	}
	if err != nil {
		return Result{Status: Warn, Detail: reason(err) + ": the copy storage driver is used (full copies instead of copy-on-write snapshots)",
			Fix: "for instant root disks use a kernel with device-mapper (CONFIG_BLK_DEV_DM, CONFIG_DM_SNAPSHOT; `sudo modprobe dm_snapshot` where they are modules); storage_driver = \"copy\" makes this check pass"}
	}
	return Result{Status: Pass, Detail: how + ": dm storage driver usable"}
}

func readable(p string) error {
	if p == "" {
		return errors.New("not set")
	}
	f, err := os.Open(p)
	if err != nil {
		if os.IsNotExist(err) {
			return errors.New("does not exist")
		}
		return err
	}
	return f.Close()
}

func checkFirecracker(ctx context.Context, bin string) Result {
	fi, err := os.Stat(bin)
	if err != nil {
		return Result{Status: Fail, Detail: fmt.Sprintf("firecracker binary %s does not exist", bin), Fix: "install the runtime bundle with `banger runtime install`, or set firecracker_bin"}
	}
	if fi.Mode()&0o111 == 0 {
		return Result{Status: Fail, Detail: fmt.Sprintf("%s is not executable", bin), Fix: "chmod +x " + bin}
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := hostops.Run(ctx, bin, "--version")
	if err != nil {
		return Result{Status: Fail, Detail: fmt.Sprintf("%s --version failed: %s", bin, oneLine(err.Error()))}
	}
	return Result{Status: Pass, Detail: fmt.Sprintf("%s (%s)", bin, oneLine(string(out)))}
}

// checkAgent wants a static linux executable: no PT_INTERP program header.
func checkAgent(p string) Result {
	f, err := elf.Open(p)
	if err != nil {
		if os.IsNotExist(err) {
			return Result{Status: Fail, Detail: fmt.Sprintf("guest agent %s does not exist", p), Fix: "install the runtime bundle with `banger runtime install`, or set vsock_agent_path"}
		}
		return Result{Status: Fail, Detail: fmt.Sprintf("guest agent %s is not a linux executable: %v", p, err), Fix: "rebuild it with `make build` (CGO_ENABLED=0)"}
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return Result{Status: Fail, Detail: fmt.Sprintf("guest agent %s is dynamically linked; guests need a static binary", p), Fix: "rebuild it with `make build` (CGO_ENABLED=0)"}
		}
	}
	return Result{Status: Pass, Detail: p + " (static)"}
}

// DNSProblem is the one line daemon status, doctor and vm create show when
// bangerd could not bind its DNS address.
func DNSProblem(addr string, err error) string {
	if errors.Is(err, syscall.EADDRINUSE) {
		return addr + " taken by another process; NAME.vm won't resolve through it — set dns_listen_addr to a free address"
	}
	return fmt.Sprintf("cannot serve DNS on %s (%s); NAME.vm won't resolve through it — set dns_listen_addr", addr, oneLine(err.Error()))
}

const dnsFix = "set dns_listen_addr to a free address (e.g. 127.0.0.1:42070), or stop what holds the port"

func checkDNSPort(env Env) Result {
	addr := env.Config.DNSListenAddr.String()
	if d := env.Daemon; d != nil {
		if slices.Contains(d.DNSListen, addr) {
			return Result{Status: Pass, Detail: addr + " served by the running bangerd"}
		}
		if d.DNSProblem != "" {
			return Result{Status: Fail, Detail: "the running bangerd does not serve DNS: " + d.DNSProblem, Fix: dnsFix}
		}
	}
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		detail := DNSProblem(addr, err)
		if env.Daemon != nil {
			detail = "the running bangerd does not serve DNS: " + detail
		}
		return Result{Status: Fail, Detail: detail, Fix: dnsFix}
	}
	pc.Close()
	if env.Daemon != nil {
		return Result{Status: Warn, Detail: addr + " is free but the running bangerd does not serve it (it runs with another dns_listen_addr?)"}
	}
	return Result{Status: Pass, Detail: addr + " is free"}
}

func checkStateDir(dir string) Result {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Result{Status: Fail, Detail: fmt.Sprintf("cannot create state dir %s: %v", dir, err), Fix: "set BANGER_STATE_DIR to a writable directory"}
	}
	f, err := os.CreateTemp(dir, probePattern)
	if err != nil {
		return Result{Status: Fail, Detail: fmt.Sprintf("state dir %s is not writable: %v", dir, err), Fix: "fix its ownership: sudo chown -R $USER " + dir}
	}
	name := f.Name()
	f.Close()
	os.Remove(name)
	return Result{Status: Pass, Detail: filepath.Clean(dir) + " is writable"}
}
