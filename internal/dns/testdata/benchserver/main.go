// Command benchserver runs banger's DNS server with ten records (vm0.vm to
// vm9.vm -> 172.16.0.10-19) on the address given as its argument, for
// bench-dnsperf.sh. It is under testdata so `go build ./...` skips it.
package main

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"syscall"

	"banger/internal/dns"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: benchserver HOST:PORT")
		os.Exit(2)
	}
	recs := dns.NewRecords()
	for i := range 10 {
		recs.Set(fmt.Sprintf("vm%d", i), netip.AddrFrom4([4]byte{172, 16, 0, byte(10 + i)}))
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	s := dns.NewServer(dns.NewHandler(recs, netip.MustParsePrefix("172.16.0.0/24")), log)
	if err := s.Listen(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	_ = s.Close()
}
