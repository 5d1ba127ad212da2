package dns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	mdns "github.com/miekg/dns"
)

// Server runs a dns.Handler on UDP and TCP, on one or more addresses that
// share a port (the loopback address, and the bridge address once the bridge
// exists).
type Server struct {
	h   mdns.Handler
	log *slog.Logger

	// openUDP makes a UDP listener: the platform's fastest (udp_linux.go)
	// unless a test picks the portable one.
	openUDP func(ip net.IP, port int) (udpListener, error)

	mu     sync.Mutex
	udp    []udpListener
	tcp    []*mdns.Server
	addrs  []string
	closed bool
}

// NewServer returns a Server for h; nothing is bound until Listen.
func NewServer(h mdns.Handler, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{h: h, log: log, openUDP: openUDP}
}

// Listen binds UDP and TCP on addr ("host:port"; port 0 picks one free port
// for both) and starts serving. It may be called again for another address.
func (s *Server) Listen(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("dns listen address %q: %w; use host:port such as 127.0.0.1:42069", addr, err)
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return fmt.Errorf("dns listen address %q: %q is not an IP address", addr, host)
	}
	portNum, err := net.LookupPort("udp", port)
	if err != nil {
		return fmt.Errorf("dns listen address %q: %q is not a port number", addr, port)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("dns server is closed")
	}
	var (
		pc udpListener
		ln net.Listener
	)
	// With port 0 the UDP port is chosen first and TCP must get the same;
	// retry a few times if another process holds it on TCP.
	for attempt := 0; ; attempt++ {
		pc, err = s.openUDP(ip, portNum)
		if err != nil {
			return fmt.Errorf("dns: listening on udp %s: %w (is another dns server or banger daemon running? change dns_listen_addr)", addr, err)
		}
		bound := strconv.Itoa(pc.localAddr().Port)
		ln, err = net.Listen("tcp", net.JoinHostPort(host, bound))
		if err == nil {
			break
		}
		_ = pc.close()
		if portNum != 0 || attempt >= 10 {
			return fmt.Errorf("dns: listening on tcp %s: %w (is another dns server or banger daemon running? change dns_listen_addr)", net.JoinHostPort(host, bound), err)
		}
	}
	bound := pc.localAddr().String()
	tcp := &mdns.Server{Listener: ln, Handler: s.h, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second}
	started := make(chan struct{})
	failed := make(chan error, 1)
	tcp.NotifyStartedFunc = func() { close(started) }
	go func() {
		err := tcp.ActivateAndServe()
		select {
		case <-started:
			// Running listeners report their own failure; a start-up
			// failure is returned by Listen instead.
			if err != nil {
				s.log.Error("dns tcp listener stopped", "addr", bound, "err", err)
			}
		default:
			failed <- err
		}
	}()
	select {
	case <-started:
	case err := <-failed:
		_ = pc.close()
		ln.Close()
		return fmt.Errorf("dns: serving tcp on %s: %w", bound, err)
	}
	pc.serve(s.h)
	s.udp = append(s.udp, pc)
	s.tcp = append(s.tcp, tcp)
	s.addrs = append(s.addrs, bound)
	s.log.Info("dns listening", "addr", bound, "proto", "udp+tcp")
	return nil
}

// Addrs lists the bound addresses (host:port, port resolved), in the order
// they were added.
func (s *Server) Addrs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.addrs...)
}

// Close stops every listener and waits for in-flight queries.
func (s *Server) Close() error {
	s.mu.Lock()
	udp, tcp := s.udp, s.tcp
	s.udp, s.tcp, s.addrs, s.closed = nil, nil, nil, true
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var errs []error
	for _, u := range udp {
		if err := u.close(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, srv := range tcp {
		if err := srv.ShutdownContext(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("stopping dns server: %w", err)
	}
	return nil
}
