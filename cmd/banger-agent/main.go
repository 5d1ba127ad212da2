// Command banger-agent is banger's guest agent: it serves HTTP on a vsock
// port to the host only (see internal/agent). It is built static:
//
//	CGO_ENABLED=0 go build -trimpath -ldflags '-s -w -X main.version=...' ./cmd/banger-agent
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/mdlayher/vsock"

	"banger/internal/agent"
)

// version is set at build time with -ldflags '-X main.version=...'.
var version = "dev"

func main() {
	os.Exit(run())
}

func run() int {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	fs := flag.NewFlagSet("banger-agent", flag.ContinueOnError)
	port := fs.Uint("port", agent.DefaultPort, "vsock port to listen on")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "banger-agent: unexpected argument %q (flags only: --port, --version)\n", fs.Arg(0))
		return 2
	}
	if *showVersion {
		fmt.Println("banger-agent", version)
		return 0
	}
	if *port == 0 || *port > 1<<32-1 {
		fmt.Fprintf(os.Stderr, "banger-agent: --port %d is out of range (1-4294967295)\n", *port)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	l, err := vsock.Listen(uint32(*port), nil)
	if err != nil {
		log.Error("listening on vsock", "port", *port, "err", err)
		return 1
	}
	log.Info("banger-agent listening", "version", version, "port", *port)
	h := agent.Handler(agent.Options{Version: version, Logger: log})
	if err := agent.Serve(ctx, agent.HostCIDOnly(l, agent.VsockCID), h); err != nil {
		log.Error("serving", "err", err)
		return 1
	}
	log.Info("banger-agent stopped")
	return 0
}
