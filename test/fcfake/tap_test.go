package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// newNetns creates a throwaway network namespace, deleted at cleanup.
func newNetns(t *testing.T) string {
	t.Helper()
	ns := fmt.Sprintf("fcfake-%d-%d", os.Getpid(), time.Now().UnixNano()%1e6)
	run(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	return ns
}

type link struct {
	Name   string   `json:"ifname"`
	Master string   `json:"master"`
	Flags  []string `json:"flags"`
}

// linkIn returns the interface in ns, or ok=false when it does not exist.
func linkIn(t *testing.T, ns, name string) (link, bool) {
	t.Helper()
	out, err := exec.Command("ip", "-n", ns, "-j", "link", "show", "dev", name).Output()
	if err != nil {
		return link{}, false
	}
	var ls []link
	if err := json.Unmarshal(out, &ls); err != nil || len(ls) != 1 {
		t.Fatalf("ip -j link show %s: %v %s", name, err, out)
	}
	return ls[0], true
}

func hasFlag(l link, f string) bool {
	for _, x := range l.Flags {
		if x == f {
			return true
		}
	}
	return false
}

func netJSON(iface, dev, mac string) string {
	b := fmt.Sprintf(`{"iface_id":%q,"host_dev_name":%q`, iface, dev)
	if mac != "" {
		b += fmt.Sprintf(`,"guest_mac":%q`, mac)
	}
	return b + "}"
}

// TestTapAsRoot runs the fake as root inside a throwaway network namespace:
// it attaches to an existing tap, and, like a root Firecracker, silently
// creates a missing one that is on no bridge and vanishes with the process.
func TestTapAsRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace, a bridge and taps")
	}
	ns := newNetns(t)
	run(t, "ip", "-n", ns, "link", "add", "br0", "type", "bridge")
	run(t, "ip", "-n", ns, "tuntap", "add", "bgt-ok", "mode", "tap")
	run(t, "ip", "-n", ns, "link", "set", "bgt-ok", "master", "br0", "up")
	if l, _ := linkIn(t, ns, "bgt-ok"); !hasFlag(l, "NO-CARRIER") {
		t.Fatalf("tap has carrier before anyone opened it: %+v", l)
	}

	p := startFC(t, fcOpts{prefix: []string{"ip", "netns", "exec", ns}})
	p.ok("PUT", "/network-interfaces/eth0", netJSON("eth0", "bgt-ok", "06:00:ac:10:00:02"))
	l, _ := linkIn(t, ns, "bgt-ok")
	if hasFlag(l, "NO-CARRIER") || l.Master != "br0" {
		t.Errorf("after PUT: %+v, want the tap attached (carrier) and still on br0", l)
	}
	// Same iface_id again replaces the device (the old descriptor is closed first).
	p.ok("PUT", "/network-interfaces/eth0", netJSON("eth0", "bgt-ok", "06:00:ac:10:00:02"))
	// A second interface on the same tap: the tap is busy.
	p.fault("PUT", "/network-interfaces/eth1", netJSON("eth1", "bgt-ok", ""), "Device or resource busy")
	p.fault("PUT", "/network-interfaces/eth1", netJSON("eth1", "bgt-other", "06:00:AC:10:00:02"), "MAC address is already in use")
	p.fault("PUT", "/network-interfaces/eth1", netJSON("eth1", "bgt-name-too-long", ""), "Invalid TUN/TAP Backend provided by bgt-name-too-long")

	// A missing tap is created, on no bridge.
	p.ok("PUT", "/network-interfaces/eth1", netJSON("eth1", "bgt-missing", ""))
	ml, ok := linkIn(t, ns, "bgt-missing")
	if !ok || ml.Master != "" {
		t.Errorf("missing tap after PUT: exists=%v %+v, want a transient tap on no bridge", ok, ml)
	}

	p.cmd.Process.Kill()
	p.wait(3 * time.Second)
	if _, ok := linkIn(t, ns, "bgt-missing"); ok {
		t.Error("the transient tap outlived the process")
	}
	if l, ok := linkIn(t, ns, "bgt-ok"); !ok || l.Master != "br0" || !hasFlag(l, "NO-CARRIER") {
		t.Errorf("the pre-made tap after exit: exists=%v %+v, want it kept on br0 without carrier", ok, l)
	}
}

// TestTapUnprivileged runs the fake as uid 65534 inside the namespace, as
// the daemon's user would run Firecracker: a tap handed to that user opens,
// one owned by another user or a missing one fails (a tap with no owner
// at all is open to anyone: the kernel only checks an owner that is set). /dev/net/tun may be root-only on the
// host, so the fake gets a 0666 node bind-mounted in its own mount namespace.
func TestTapUnprivileged(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace and taps, and runs fcfake as uid 65534")
	}
	for _, tool := range []string{"unshare", "setpriv", "mount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (util-linux)", tool)
		}
	}
	ns := newNetns(t)
	run(t, "ip", "-n", ns, "tuntap", "add", "bgt-user", "mode", "tap", "user", "65534")
	run(t, "ip", "-n", ns, "tuntap", "add", "bgt-root", "mode", "tap", "user", "0")
	run(t, "ip", "-n", ns, "tuntap", "add", "bgt-anyone", "mode", "tap") // no owner: the kernel lets anyone attach

	dir := shortDir(t)
	os.Chmod(dir, 0o777)
	node := filepath.Join(dir, "tun")
	if err := unix.Mknod(node, unix.S_IFCHR|0o666, int(unix.Mkdev(10, 200))); err != nil {
		t.Fatalf("mknod %s: %v", node, err)
	}
	os.Chmod(node, 0o666)
	script := fmt.Sprintf(`mount --bind %s /dev/net/tun && exec setpriv --reuid=65534 --regid=65534 --clear-groups "$0" "$@"`, node)
	p := startFC(t, fcOpts{dir: dir, prefix: []string{"ip", "netns", "exec", ns, "unshare", "-m", "--propagation", "private", "sh", "-c", script}})

	if st, err := os.Stat(p.sock); err != nil || st.Sys().(*syscall.Stat_t).Uid != 65534 {
		t.Fatalf("API socket %v %v: want it created by uid 65534", st, err)
	}
	p.ok("PUT", "/network-interfaces/eth0", netJSON("eth0", "bgt-user", ""))
	p.fault("PUT", "/network-interfaces/eth1", netJSON("eth1", "bgt-root", ""), "Operation not permitted")
	p.ok("PUT", "/network-interfaces/eth2", netJSON("eth2", "bgt-anyone", ""))
	p.fault("PUT", "/network-interfaces/eth1", netJSON("eth1", "bgt-absent", ""), "Operation not permitted")
	if _, ok := linkIn(t, ns, "bgt-absent"); ok {
		t.Error("an unprivileged fake created a tap")
	}
}
