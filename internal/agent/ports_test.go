package agent

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

// procAddr formats addr:port as the kernel does in /proc/net/tcp*: each
// 32-bit word of the address printed as a host-order number.
func procAddr(addr string, port uint16) string {
	a := netip.MustParseAddr(addr).AsSlice()
	var b strings.Builder
	for i := 0; i < len(a); i += 4 {
		fmt.Fprintf(&b, "%08X", binary.NativeEndian.Uint32(a[i:]))
	}
	return fmt.Sprintf("%s:%04X", b.String(), port)
}

func procLine(i int, local, remote, st string) string {
	return fmt.Sprintf("%4d: %s %s %s 00000000:00000000 00:00000000 00000000     0        0 %d 1 0000000000000000 100 0 0 10 0\n", i, local, remote, st, 1000+i)
}

const procHeader = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"

func writeProcNet(t *testing.T, tcp, tcp6 []string) string {
	t.Helper()
	root := t.TempDir()
	files := map[string]string{"net/tcp": procHeader + strings.Join(tcp, "")}
	if tcp6 != nil {
		files["net/tcp6"] = procHeader + strings.Join(tcp6, "")
	}
	writeFiles(t, root, files)
	return root
}

func fixtureProc(t *testing.T) string {
	z4, z6 := procAddr("0.0.0.0", 0), procAddr("::", 0)
	return writeProcNet(t, []string{
		procLine(0, procAddr("127.0.0.1", 8080), z4, "0A"),
		procLine(1, procAddr("0.0.0.0", 22), z4, "0A"),
		procLine(2, procAddr("0.0.0.0", 22), z4, "0A"), // SO_REUSEPORT twin
		procLine(3, procAddr("10.0.0.2", 22), procAddr("10.0.0.1", 50000), "01"),
		procLine(4, procAddr("127.77.0.3", 3000), z4, "0A"),
	}, []string{
		procLine(0, procAddr("::", 22), z6, "0A"),
		procLine(1, procAddr("::1", 5432), z6, "0A"),
		procLine(2, procAddr("::1", 5432), procAddr("::1", 40000), "06"),
	})
}

func TestListenersFromProc(t *testing.T) {
	s := &server{opts: Options{ProcRoot: fixtureProc(t)}.withDefaults()}
	got, err := s.listeners()
	if err != nil {
		t.Fatal(err)
	}
	want := []Listener{
		{"tcp", "0.0.0.0", 22}, {"tcp6", "::", 22},
		{"tcp", "127.77.0.3", 3000}, {"tcp6", "::1", 5432}, {"tcp", "127.0.0.1", 8080},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("listeners =\n%v\nwant\n%v", got, want)
	}

	s.opts.GuestLoopback = netip.MustParseAddr("127.77.0.3")
	s.opts.ExactListeners = true
	got, err = s.listeners()
	if err != nil {
		t.Fatal(err)
	}
	if want := []Listener{{"tcp", "127.77.0.3", 3000}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("ExactListeners: listeners = %v, want %v", got, want)
	}
}

func TestListenersErrors(t *testing.T) {
	// No tcp6 (a kernel without IPv6) is fine.
	root := writeProcNet(t, []string{procLine(0, procAddr("0.0.0.0", 80), procAddr("0.0.0.0", 0), "0A")}, nil)
	s := &server{opts: Options{ProcRoot: root}.withDefaults()}
	got, err := s.listeners()
	if err != nil || len(got) != 1 || got[0].Port != 80 {
		t.Fatalf("listeners without tcp6 = %v, %v", got, err)
	}
	// No tcp at all is an error; so is a malformed line.
	s.opts.ProcRoot = t.TempDir()
	if _, err := s.listeners(); err == nil {
		t.Fatal("listeners with no /proc/net/tcp: no error")
	}
	s.opts.ProcRoot = writeProcNet(t, []string{procLine(0, "nothex:0050", procAddr("0.0.0.0", 0), "0A")}, nil)
	if _, err := s.listeners(); err == nil || !strings.Contains(err.Error(), "malformed") {
		t.Fatalf("malformed line: err = %v", err)
	}
}

func TestParseProcAddr(t *testing.T) {
	for _, tc := range []struct {
		addr string
		port uint16
	}{{"127.0.0.1", 8080}, {"0.0.0.0", 1}, {"::", 65535}, {"::1", 22}, {"fe80::1:2:3:4", 443}, {"::ffff:127.0.0.1", 80}} {
		a, p, err := parseProcAddr(procAddr(tc.addr, tc.port))
		if err != nil || a.String() != netip.MustParseAddr(tc.addr).String() || p != tc.port {
			t.Errorf("parseProcAddr(%s) = %v, %d, %v; want %s, %d", procAddr(tc.addr, tc.port), a, p, err, tc.addr, tc.port)
		}
	}
	for _, bad := range []string{"", "0100007F", "0100007F:", "0100007F:XYZ", "0100:0050", "0100007G:0050", "0100007F:10000"} {
		if _, _, err := parseProcAddr(bad); err == nil {
			t.Errorf("parseProcAddr(%q): no error", bad)
		}
	}
}

func TestClientPorts(t *testing.T) {
	c := serveUnix(t, Handler(Options{ProcRoot: fixtureProc(t)}))
	ls, err := c.Ports(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 5 || ls[0] != (Listener{"tcp", "0.0.0.0", 22}) {
		t.Fatalf("Ports = %v", ls)
	}

	legacy := serveUnix(t, Handler(Options{Legacy: true, ProcRoot: fixtureProc(t)}))
	if _, err := legacy.Ports(context.Background()); !errors.Is(err, ErrPortsUnsupported) {
		t.Fatalf("Ports on a legacy agent = %v, want ErrPortsUnsupported", err)
	}

	broken := serveUnix(t, Handler(Options{ProcRoot: t.TempDir()}))
	if _, err := broken.Ports(context.Background()); err == nil || !strings.Contains(err.Error(), "500") {
		t.Fatalf("Ports with unreadable proc = %v, want the 500 and its message", err)
	}
}

// The real /proc shows a listener this test opens.
func TestPortsRealProc(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := uint16(l.Addr().(*net.TCPAddr).Port)
	c := serveUnix(t, Handler(Options{}))
	ls, err := c.Ports(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range ls {
		if x == (Listener{"tcp", "127.0.0.1", port}) {
			return
		}
	}
	t.Fatalf("Ports = %v, does not list 127.0.0.1:%d", ls, port)
}
