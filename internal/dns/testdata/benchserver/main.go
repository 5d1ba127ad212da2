// Command benchserver runs banger's DNS server with N records (vm0.vm ...
// -> 172.16.0.10 onwards in a /22; N is the second argument, default 10)
// on the address given as its first argument, for bench-dnsperf.sh. It is under testdata so `go build ./...` skips it.
package main

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"banger/internal/dns"
)

func main() {
	if len(os.Args) < 2 || len(os.Args) > 3 {
		fmt.Fprintln(os.Stderr, "usage: benchserver HOST:PORT [RECORDS]")
		os.Exit(2)
	}
	n := 10
	if len(os.Args) == 3 {
		var err error
		if n, err = strconv.Atoi(os.Args[2]); err != nil || n < 1 || n > 1000 {
			fmt.Fprintln(os.Stderr, "benchserver: RECORDS must be a number from 1 to 1000")
			os.Exit(2)
		}
	}
	recs := dns.NewRecords()
	for i := range n {
		a := 10 + i
		recs.Set(fmt.Sprintf("vm%d", i), netip.AddrFrom4([4]byte{172, 16, byte(a >> 8), byte(a)}))
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	s := dns.NewServer(dns.NewHandler(recs, netip.MustParsePrefix("172.16.0.0/22")), log)
	if err := s.Listen(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	_ = s.Close()
}
