//go:build !linux || !(amd64 || arm64)

package dns

import "net"

// Elsewhere the listener is the netpoller one (udp_poll.go).
func openUDP(ip net.IP, port int) (udpListener, error) { return openPollUDP(ip, port) }

// sockaddrUDP is never needed: the netpoller path passes net.Addrs.
func sockaddrUDP([]byte) *net.UDPAddr { return nil }
