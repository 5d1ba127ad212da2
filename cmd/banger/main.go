// Command banger is the CLI for bangerd. Built with -tags banger_front it is
// the small front that execs banger-full (this package built without the
// tag) for the commands it does not have; see internal/cli/front.go.
package main

import (
	"os"

	"banger/internal/cli"
)

// Set with -ldflags "-X main.version=... -X main.commit=... -X main.date=...".
var (
	version = "dev"
	commit  = "unknown"
	date    = "unknown"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], cli.BuildInfo{Version: version, Commit: commit, Date: date}))
}
