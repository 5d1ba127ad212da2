package capability

import (
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// NFTables asks nf_tables for its tables over netlink (a read-only
// NFT_MSG_GETTABLE dump), which works whether nf_tables is built in or a
// module (the kernel loads it on the first query). nfnetlink answers only
// callers with CAP_NET_ADMIN; without it the probe says what the kernel's
// own records show (loaded module, modules.builtin, modules.dep, the
// embedded config) and that it could not ask. An *Unavailable error says
// nf_tables is missing.
func NFTables() (string, error) { return HostPaths().NFTables() }

// NFTables is the nf_tables probe on p's paths.
func (p Paths) NFTables() (string, error) {
	err := nftQuery()
	switch {
	case err == nil:
		return "nf_tables answers over netlink", nil
	case errors.Is(err, unix.EPERM):
		if how := p.nftRecords(); how != "" {
			return how + " (not asked over netlink: that needs CAP_NET_ADMIN)", nil
		}
		return "", &Unavailable{"nf_tables", "not loaded, built in or installed for this kernel (not asked over netlink: that needs CAP_NET_ADMIN)"}
	case errors.Is(err, unix.EPROTONOSUPPORT):
		return "", &Unavailable{"nf_tables", "the kernel has no netfilter netlink (nfnetlink)"}
	case errors.Is(err, unix.EINVAL), errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.ENOENT):
		return "", &Unavailable{"nf_tables", fmt.Sprintf("the kernel does not know the nf_tables netlink subsystem (%v)", err)}
	}
	return "", fmt.Errorf("asking nf_tables over netlink: %w", err)
}

// nftRecords says how the kernel's files show nf_tables, or "".
func (p Paths) nftRecords() string {
	if _, err := os.Stat(filepath.Join(p.SysModule, "nf_tables")); err == nil {
		return "nf_tables module loaded"
	}
	if b, err := os.ReadFile(filepath.Join(p.ModulesDir, "modules.builtin")); err == nil && containsModule(string(b), "nf_tables") {
		return "nf_tables built into the kernel (modules.builtin)"
	}
	if v := kernelConfigValue(p.ProcConfig, "CONFIG_NF_TABLES"); v == "y" {
		return "nf_tables built into the kernel (" + p.ProcConfig + ")"
	}
	if b, err := os.ReadFile(filepath.Join(p.ModulesDir, "modules.dep")); err == nil && containsModule(string(b), "nf_tables") {
		return "nf_tables module installed (loads on first use)"
	}
	return ""
}

const sizeofNfgenmsg = 4 // family, version, res_id

// nftQuery sends one NFT_MSG_GETTABLE dump request and reads the answer
// to its end; nil means nf_tables answered.
func nftQuery() error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(int64(2 * time.Second))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return err
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	const seq = 1
	req := make([]byte, unix.NLMSG_HDRLEN+sizeofNfgenmsg)
	binary.NativeEndian.PutUint32(req[0:], uint32(len(req)))
	binary.NativeEndian.PutUint16(req[4:], unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_GETTABLE)
	binary.NativeEndian.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	binary.NativeEndian.PutUint32(req[8:], seq)
	req[unix.NLMSG_HDRLEN] = unix.AF_UNSPEC // nfgenmsg: family, version, res_id
	req[unix.NLMSG_HDRLEN+1] = unix.NFNETLINK_V0
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	buf := make([]byte, 1<<16)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return err
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if m.Header.Seq != seq {
				continue
			}
			switch m.Header.Type {
			case unix.NLMSG_ERROR, unix.NLMSG_DONE:
				if len(m.Data) < 4 {
					return nil
				}
				if code := int32(binary.NativeEndian.Uint32(m.Data)); code < 0 {
					return unix.Errno(-code)
				}
				return nil
			}
		}
	}
}

// kernelConfigValue reads KEY's value ("y", "m", "") from a gzipped kernel
// config such as /proc/config.gz.
func kernelConfigValue(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return ""
	}
	b, err := io.ReadAll(io.LimitReader(zr, 16<<20))
	if err != nil {
		return ""
	}
	return ConfigValue(string(b), key)
}

// ConfigValue finds KEY=value in a kernel .config text; "" when unset.
func ConfigValue(config, key string) string {
	for _, line := range strings.Split(config, "\n") {
		if v, ok := strings.CutPrefix(line, key+"="); ok {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}
