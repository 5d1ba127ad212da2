package daemon

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"banger/internal/config"
	"banger/internal/hostops"
)

// Main is bangerd's entry point; it returns the exit code.
func Main(args []string, build BuildInfo) int {
	setMemProfileRate()
	fs := flag.NewFlagSet("bangerd", flag.ContinueOnError)
	showVersion := fs.Bool("version", false, "print version and exit")
	quiet := fs.Bool("background", false, "log only to the log file (set when started by `banger daemon start`)")
	fs.SetOutput(os.Stderr)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *showVersion {
		fmt.Printf("bangerd %s (commit %s, built %s)\n", build.Version, build.Commit, build.Date)
		return 0
	}
	paths, err := config.DefaultPaths(os.Getenv)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bangerd: %v\n", err)
		return 2
	}
	loaded, err := config.Load(paths, os.Getenv)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bangerd: %v\n", err)
		return 2
	}
	if err := os.MkdirAll(paths.StateDir, 0o700); err != nil {
		fmt.Fprintf(os.Stderr, "bangerd: creating state dir %s: %v\n", paths.StateDir, err)
		return 1
	}
	logFile, err := os.OpenFile(paths.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bangerd: opening log %s: %v\n", paths.LogFile, err)
		return 1
	}
	defer logFile.Close()
	var w io.Writer = logFile
	if !*quiet {
		w = io.MultiWriter(logFile, os.Stderr)
	}
	log := slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: parseLevel(loaded.Config.LogLevel)}))
	for _, warn := range loaded.Warnings {
		log.Warn(warn)
	}
	host := hostops.New(hostops.Options{
		Roots:      []string{paths.StateDir, paths.DataDir},
		HelperPath: loaded.Config.HelperPath,
		Logger:     log,
	})
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	d, err := New(ctx, Options{Loaded: loaded, Build: build, Logger: log, Host: host})
	if err != nil {
		fmt.Fprintf(os.Stderr, "bangerd: %v\n", err)
		log.Error("start failed", "err", err)
		if errors.Is(err, ErrConflict) {
			return 3
		}
		return 1
	}
	startMemDebug(log, d)
	if err := d.Run(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "bangerd: %v\n", err)
		log.Error("serve failed", "err", err)
		return 1
	}
	return 0
}

func parseLevel(s string) slog.Level {
	switch s {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}
