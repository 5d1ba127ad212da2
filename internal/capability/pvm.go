package capability

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// PVM describes how /dev/kvm is provided.
type PVM struct {
	// Active: the kvm_pvm module is there and the CPU has no vmx/svm, so
	// /dev/kvm is PVM (KVM in a cloud VM without nested virtualisation).
	Active bool
	// HWFlag is "vmx" or "svm" when the CPU offers hardware virtualisation.
	HWFlag string
	// Module: /sys/module/kvm_pvm exists.
	Module bool
}

// DetectPVM reads /sys/module/kvm_pvm and the CPU flags.
func DetectPVM() PVM { return HostPaths().DetectPVM() }

// DetectPVM is the PVM probe on p's paths.
func (p Paths) DetectPVM() PVM {
	var r PVM
	if _, err := os.Stat(filepath.Join(p.SysModule, "kvm_pvm")); err == nil {
		r.Module = true
	}
	r.HWFlag = cpuVirtFlag(p.CPUInfo)
	r.Active = r.Module && r.HWFlag == ""
	return r
}

func cpuVirtFlag(cpuinfo string) string {
	f, err := os.Open(cpuinfo)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.TrimSpace(k) != "flags" {
			continue
		}
		for _, fl := range strings.Fields(v) {
			if fl == "vmx" || fl == "svm" {
				return fl
			}
		}
		return "" // the first CPU's flags are enough
	}
	return ""
}

// ErrNoEmbeddedConfig means the kernel was built without CONFIG_IKCONFIG.
var ErrNoEmbeddedConfig = errors.New("the kernel has no embedded config (CONFIG_IKCONFIG)")

// KernelConfig returns the .config a kernel image carries (CONFIG_IKCONFIG:
// gzip data between the markers IKCFG_ST and IKCFG_ED).
func KernelConfig(kernel string) (string, error) {
	b, err := os.ReadFile(kernel)
	if err != nil {
		return "", err
	}
	start := bytes.Index(b, []byte("IKCFG_ST"))
	if start < 0 {
		return "", ErrNoEmbeddedConfig
	}
	rest := b[start+len("IKCFG_ST"):]
	end := bytes.Index(rest, []byte("IKCFG_ED"))
	if end < 0 {
		return "", ErrNoEmbeddedConfig
	}
	zr, err := gzip.NewReader(bytes.NewReader(rest[:end]))
	if err != nil {
		return "", ErrNoEmbeddedConfig
	}
	cfg, err := io.ReadAll(io.LimitReader(zr, 16<<20))
	if err != nil {
		return "", ErrNoEmbeddedConfig
	}
	return string(cfg), nil
}
