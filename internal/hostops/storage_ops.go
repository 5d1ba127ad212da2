package hostops

// addStorageOps registers the storage operations (loop, device-mapper,
// filesystem growth, /root repair).
func addStorageOps(m map[string]opFunc) {}
