package dns

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"banger/internal/hostops"
)

// loopback2 is a second loopback address; Linux answers on all of 127/8.
const loopback2 = "127.0.0.2"

func startServer(t *testing.T) (*Server, *Records) {
	t.Helper()
	recs := NewRecords()
	recs.Set("dev", netip.MustParseAddr("172.16.0.2"))
	s := NewServer(NewHandler(recs, netip.MustParsePrefix("172.16.0.0/24")), nil)
	t.Cleanup(func() { _ = s.Close() })
	if err := s.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	return s, recs
}

func query(t *testing.T, network, addr, name string, qtype uint16) *mdns.Msg {
	t.Helper()
	c := &mdns.Client{Net: network, Timeout: 3 * time.Second}
	q := new(mdns.Msg)
	q.SetQuestion(name, qtype)
	r, _, err := c.Exchange(q, addr)
	if err != nil {
		t.Fatalf("%s query %s to %s: %v", network, name, addr, err)
	}
	return r
}

func aOf(t *testing.T, m *mdns.Msg) string {
	t.Helper()
	if m.Rcode != mdns.RcodeSuccess || len(m.Answer) != 1 {
		return mdns.RcodeToString[m.Rcode]
	}
	a, ok := m.Answer[0].(*mdns.A)
	if !ok {
		t.Fatalf("answer %v is not A", m.Answer[0])
	}
	return a.A.String()
}

func TestServerUDPTCPTwoListeners(t *testing.T) {
	s, recs := startServer(t)
	port := s.Addrs()[0][strings.LastIndex(s.Addrs()[0], ":")+1:]
	if port == "0" {
		t.Fatalf("Addrs did not resolve the port: %v", s.Addrs())
	}
	// The second listener uses the same port on another address, like the
	// bridge address added once the bridge exists.
	if err := s.Listen(net.JoinHostPort(loopback2, port)); err != nil {
		t.Fatal(err)
	}
	addrs := s.Addrs()
	if len(addrs) != 2 || addrs[1] != net.JoinHostPort(loopback2, port) {
		t.Fatalf("Addrs = %v", addrs)
	}
	for _, addr := range addrs {
		for _, network := range []string{"udp", "tcp"} {
			if got := aOf(t, query(t, network, addr, "dev.vm.", mdns.TypeA)); got != "172.16.0.2" {
				t.Errorf("%s %s dev.vm = %s", network, addr, got)
			}
			if m := query(t, network, addr, "nope.vm.", mdns.TypeA); m.Rcode != mdns.RcodeNameError || !m.Authoritative {
				t.Errorf("%s %s nope.vm rcode %s aa %v", network, addr, mdns.RcodeToString[m.Rcode], m.Authoritative)
			}
			if m := query(t, network, addr, "example.com.", mdns.TypeA); m.Rcode != mdns.RcodeRefused {
				t.Errorf("%s %s example.com rcode %s", network, addr, mdns.RcodeToString[m.Rcode])
			}
			m := query(t, network, addr, "2.0.16.172.in-addr.arpa.", mdns.TypePTR)
			if len(m.Answer) != 1 || m.Answer[0].(*mdns.PTR).Ptr != "dev.vm." {
				t.Errorf("%s %s PTR = %v", network, addr, m.Answer)
			}
		}
	}
	// Records follow VM start, stop, and a rebuild.
	recs.Set("web", netip.MustParseAddr("172.16.0.9"))
	if got := aOf(t, query(t, "udp", addrs[1], "web.vm.", mdns.TypeA)); got != "172.16.0.9" {
		t.Errorf("after Set: web.vm = %s", got)
	}
	recs.Remove("dev")
	if got := aOf(t, query(t, "tcp", addrs[0], "dev.vm.", mdns.TypeA)); got != "NXDOMAIN" {
		t.Errorf("after Remove: dev.vm = %s", got)
	}
	recs.Replace(map[string]netip.Addr{"dev": netip.MustParseAddr("172.16.0.4")})
	if got := aOf(t, query(t, "udp", addrs[0], "dev.vm.", mdns.TypeA)); got != "172.16.0.4" {
		t.Errorf("after Replace: dev.vm = %s", got)
	}
	if got := aOf(t, query(t, "udp", addrs[0], "web.vm.", mdns.TypeA)); got != "NXDOMAIN" {
		t.Errorf("after Replace: web.vm = %s", got)
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if len(s.Addrs()) != 0 {
		t.Errorf("Addrs after Close = %v", s.Addrs())
	}
	c := &mdns.Client{Net: "tcp", Timeout: 500 * time.Millisecond}
	q := new(mdns.Msg)
	q.SetQuestion("dev.vm.", mdns.TypeA)
	if _, _, err := c.Exchange(q, addrs[0]); err == nil {
		t.Error("tcp query answered after Close")
	}
	if err := s.Listen("127.0.0.1:0"); err == nil {
		t.Error("Listen after Close succeeded")
	}
}

func TestServerIPv6(t *testing.T) {
	s, _ := startServer(t)
	if err := s.Listen("[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	}
	for _, network := range []string{"udp", "tcp"} {
		if got := aOf(t, query(t, network, s.Addrs()[1], "dev.vm.", mdns.TypeA)); got != "172.16.0.2" {
			t.Errorf("%s over [::1]: %s", network, got)
		}
	}
}

func TestServerListenErrors(t *testing.T) {
	s, _ := startServer(t)
	for _, addr := range []string{"localhost", "nohost:53", s.Addrs()[0]} {
		if err := s.Listen(addr); err == nil {
			t.Errorf("Listen(%q) succeeded", addr)
		}
	}
	// A failed Listen leaves the good listener serving.
	if got := aOf(t, query(t, "udp", s.Addrs()[0], "dev.vm.", mdns.TypeA)); got != "172.16.0.2" {
		t.Errorf("after failed Listen: %s", got)
	}
}

func TestServerGarbageOverUDP(t *testing.T) {
	s, _ := startServer(t)
	conn, err := net.Dial("udp", s.Addrs()[0])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, junk := range [][]byte{{0}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13}, make([]byte, 600)} {
		if _, err := conn.Write(junk); err != nil {
			t.Fatal(err)
		}
	}
	if got := aOf(t, query(t, "udp", s.Addrs()[0], "dev.vm.", mdns.TypeA)); got != "172.16.0.2" {
		t.Errorf("after garbage: %s", got)
	}
}

func TestDig(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// External commands go through hostops.Run (DESIGN.md §2).
	if _, err := hostops.Run(ctx, "dig", "-v"); err != nil && strings.Contains(err.Error(), "executable file not found") {
		t.Skip("needs dig (Debian package bind9-dnsutils); CI installs it")
	}
	s, _ := startServer(t)
	host, port, _ := net.SplitHostPort(s.Addrs()[0])
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"dev.vm", "A"}, []string{"status: NOERROR", "flags: qr aa rd", "dev.vm.\t\t\t5\tIN\tA\t172.16.0.2"}},
		{[]string{"+tcp", "DEV.VM", "A"}, []string{"status: NOERROR", "DEV.VM.\t\t\t5\tIN\tA\t172.16.0.2"}},
		{[]string{"nope.vm", "A"}, []string{"status: NXDOMAIN", "AUTHORITY: 1", "vm.\t\t\t5\tIN\tSOA\tns.vm. hostmaster.vm."}},
		{[]string{"dev.vm", "AAAA"}, []string{"status: NOERROR", "ANSWER: 0", "AUTHORITY: 1"}},
		{[]string{"example.com", "A"}, []string{"status: REFUSED"}},
		{[]string{"-x", "172.16.0.2"}, []string{"status: NOERROR", "PTR\tdev.vm."}},
	}
	for _, tt := range tests {
		args := append([]string{"@" + host, "-p", port, "+tries=1", "+time=3"}, tt.args...)
		out, err := hostops.Run(ctx, "dig", args...)
		if err != nil {
			t.Fatalf("dig %v: %v\n%s", args, err, out)
		}
		for _, w := range tt.want {
			if !strings.Contains(string(out), w) {
				t.Errorf("dig %v: output lacks %q:\n%s", tt.args, w, out)
			}
		}
	}
}
