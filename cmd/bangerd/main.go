// Command bangerd is banger's user daemon.
package main

import (
	"os"

	"banger/internal/daemon"
)

// Set with -ldflags "-X main.version=... -X main.commit=... -X main.date=...".
var (
	version = "dev"
	commit  = "unknown"
	date    = "unknown"
)

func main() {
	os.Exit(daemon.Main(os.Args[1:], daemon.BuildInfo{Version: version, Commit: commit, Date: date}))
}
