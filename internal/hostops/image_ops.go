package hostops

// addImageOps registers the image build operations.
func addImageOps(m map[string]opFunc) {}
