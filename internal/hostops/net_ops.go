package hostops

// addNetOps registers the network operations (bridge, taps, NAT).
func addNetOps(m map[string]opFunc) {}
