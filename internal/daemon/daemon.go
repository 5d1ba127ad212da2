// Package daemon is bangerd: the RPC server, VM lifecycle, per-VM locks,
// reconcile, stale-stop and stats. It is the only package that wires the
// others together.
package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/preflight"
	"banger/internal/storage"
	"banger/internal/store"
)

// BuildInfo identifies the running binary.
type BuildInfo struct {
	Version string
	Commit  string
	Date    string
}

// Options configure a Daemon.
type Options struct {
	Loaded *config.Loaded
	Build  BuildInfo
	Logger *slog.Logger
	// Host is the privileged seam; nil builds the default hostops client.
	Host Host
}

// Daemon is one running bangerd.
type Daemon struct {
	cfg      config.Config
	paths    config.Paths
	build    BuildInfo
	log      *slog.Logger
	uid      int
	started  time.Time
	store    *store.Store
	host     Host
	events   *hub
	locks    *vmLocks
	stopping chan struct{}
	stopOnce sync.Once
	lockFile *os.File
	vms      *runtimeState
	net      *netState
	storage  *storage.Manager
	stats    *statsState
	taps     *tapPool
	checks   *preflight.Cache
	fwd      *forwarder // the forwards held for running VMs (forwards.go)
	// checkTap verifies a tap is on the bridge and up before Firecracker
	// is told about it (tapReady; tests replace it).
	checkTap func(tap, bridge string) error
	// reconciled is closed when the start-up reconcile is done.
	reconciled chan struct{}
}

type handler func(ctx context.Context, params json.RawMessage) (any, error)

// New prepares a daemon: it takes the single-daemon lock and opens the
// store. Run serves it.
func New(ctx context.Context, opts Options) (*Daemon, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := opts.Loaded
	d := &Daemon{
		cfg:      l.Config,
		paths:    l.Paths,
		build:    opts.Build,
		log:      log,
		uid:      os.Getuid(),
		started:  time.Now(),
		events:   newHub(),
		locks:    newVMLocks(),
		stopping: make(chan struct{}),
		host:     opts.Host,
		checks:   preflight.NewCache(),

		reconciled: make(chan struct{}),
	}
	for _, dir := range []string{d.paths.StateDir, d.paths.SocketDir} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("creating %s: %w", dir, err)
		}
	}
	lf, err := lockDaemon(d.paths.LockFile)
	if err != nil {
		return nil, err
	}
	d.lockFile = lf
	st, err := store.Open(ctx, d.paths.DBFile)
	if err != nil {
		d.unlock()
		return nil, fmt.Errorf("opening store %s: %w", d.paths.DBFile, err)
	}
	limitStore(st)
	d.store = st
	if err := d.init(ctx); err != nil {
		st.Close()
		d.unlock()
		return nil, err
	}
	return d, nil
}

// lockDaemon takes an exclusive flock that lives as long as the daemon.
func lockDaemon(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening lock file %s: %w", path, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		b := make([]byte, 32)
		n, _ := f.ReadAt(b, 0)
		f.Close()
		pid := strings.TrimSpace(string(b[:n]))
		if pid == "" {
			pid = "unknown"
		}
		return nil, withKind(ErrConflict, "another bangerd is already running (pid %s, lock %s)", pid, path)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return f, nil
}

func (d *Daemon) unlock() {
	if d.lockFile != nil {
		_ = unix.Flock(int(d.lockFile.Fd()), unix.LOCK_UN)
		d.lockFile.Close()
		d.lockFile = nil
	}
}

// Run serves the API until ctx ends or daemon.stop is called, then shuts
// down gracefully: it stops accepting, lets in-flight calls finish and closes
// the store. VMs keep running.
func (d *Daemon) Run(ctx context.Context) error {
	ln, err := d.listen()
	if err != nil {
		d.close()
		return err
	}
	srv := d.httpServer()
	bg, cancelBG := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	// Every VM's lock is taken before the socket serves and released as
	// its interrupted work is finished in the background: the socket
	// answers at once, and a command on a VM still being finished waits.
	su := d.lockAll(bg)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	d.runStartup(bg, su, &wg)
	d.startBackground(bg, &wg)
	d.log.Info("bangerd serving", "socket", d.paths.Socket, "pid", os.Getpid(), "version", d.build.Version, "privileged", d.hostMode())
	var serveErr error
	select {
	case <-ctx.Done():
	case <-d.stopping:
	case serveErr = <-errc:
	}
	d.stopOnce.Do(func() { close(d.stopping) })
	shutCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil {
		d.log.Warn("shutdown", "err", err)
	}
	cancelBG()
	wg.Wait()
	if err := os.Remove(d.paths.Socket); err != nil && !os.IsNotExist(err) {
		d.log.Warn("removing the socket", "socket", d.paths.Socket, "err", err)
	}
	d.close()
	d.log.Info("bangerd stopped")
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) && !errors.Is(serveErr, net.ErrClosed) {
		return serveErr
	}
	return nil
}

func (d *Daemon) close() {
	d.shutdownRuntime()
	if d.store != nil {
		d.store.Close()
		d.store = nil
	}
	d.unlock()
}

func (d *Daemon) status(ctx context.Context, _ json.RawMessage) (any, error) {
	counts, err := d.store.CountVMsByState(ctx)
	if err != nil {
		return nil, fmt.Errorf("counting vms: %w", err)
	}
	return api.DaemonStatus{
		PID:        os.Getpid(),
		Version:    d.build.Version,
		Commit:     d.build.Commit,
		Socket:     d.paths.Socket,
		StateDir:   d.paths.StateDir,
		StartedAt:  d.started,
		UptimeS:    time.Since(d.started).Seconds(),
		DNSListen:  d.dnsAddrs(),
		DNSProblem: d.dnsProblem(),
		VMCounts:   counts,
		Euid:       os.Geteuid(),
		Privileged: d.hostMode(),
	}, nil
}

func (d *Daemon) stopDaemon(ctx context.Context, _ json.RawMessage) (any, error) {
	go func() {
		time.Sleep(50 * time.Millisecond)
		d.stopOnce.Do(func() { close(d.stopping) })
	}()
	return map[string]bool{"stopping": true}, nil
}
