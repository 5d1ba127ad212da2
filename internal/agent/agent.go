// Package agent is banger's guest agent: a small HTTP server that runs in
// every guest on a vsock port, and the host-side client the daemon uses to
// ask it whether the guest is up and what it is doing.
//
// The server takes any net.Listener (AF_VSOCK in the guest, a unix socket in
// tests) and reads its answers from /proc, /etc, utmp and statfs through
// injectable roots, so tests can point it at fixture files.
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// DefaultPort is the vsock port the agent listens on in the guest.
const DefaultPort = 1024

// HostCID is the vsock context ID of the host.
const HostCID = 2

// Healthz is the body of GET /healthz.
type Healthz struct {
	Status  string `json:"status"`
	Version string `json:"version"`
	// Protocol is the agent protocol version (ProtocolVersion); 0 from an
	// agent older than versioning.
	Protocol int     `json:"protocol"`
	Hostname string  `json:"hostname"`
	UptimeS  float64 `json:"uptime_s"`
	BootID   string  `json:"boot_id"`
}

// DiskUsage is the usage of the filesystem holding Path.
type DiskUsage struct {
	Path       string `json:"path"`
	TotalBytes uint64 `json:"total_bytes"`
	UsedBytes  uint64 `json:"used_bytes"`
}

// Info is the body of GET /v1/info.
type Info struct {
	Kernel            string     `json:"kernel"`
	OSRelease         string     `json:"os_release"`
	Load              [3]float64 `json:"load"`
	MemTotalBytes     uint64     `json:"mem_total_bytes"`
	MemAvailableBytes uint64     `json:"mem_available_bytes"`
	RootDisk          DiskUsage  `json:"root_disk"`
	HomeDisk          DiskUsage  `json:"home_disk"`
	SSHLogins         int        `json:"ssh_logins"`
}

// errorBody is the body of every non-2xx answer.
type errorBody struct {
	Error string `json:"error"`
}

// Options configure Handler. Zero values mean the real guest's files.
type Options struct {
	// Version is reported by /healthz.
	Version string
	// Legacy makes the agent answer as one from before protocol versioning
	// (no protocol in /healthz, no /v1/exec); the fake Firecracker uses it
	// to stand in for an old image.
	Legacy bool
	// ProcRoot is where procfs is read (default "/proc").
	ProcRoot string
	// EtcRoot is where os-release is read (default "/etc").
	EtcRoot string
	// UtmpPath is the utmp file counted for SSH logins (default "/run/utmp").
	UtmpPath string
	// RootPath and HomePath are the paths whose filesystems /v1/info reports
	// (defaults "/" and "/root").
	RootPath string
	HomePath string
	// Statfs reports the filesystem usage of a path (default: statfs(2)).
	Statfs func(path string) (DiskUsage, error)
	// Now is the clock (default time.Now). It is used only with BootTime.
	Now func() time.Time

	// Hostname, BootID and BootTime override what procfs says; the fake
	// Firecracker uses them to answer as a guest that booted when it was
	// started. Empty/zero means "read procfs".
	Hostname string
	BootID   string
	BootTime time.Time
	// Logins overrides the SSH login count (default: utmp and sshd session
	// processes, see countLogins).
	Logins func() (int, error)

	// SetClock sets the guest's clock for POST /v1/clock (default:
	// clock_settime(CLOCK_REALTIME)); the fake Firecracker records the call
	// instead of setting the host's clock.
	SetClock func(time.Time) error

	// Logger receives request failures (default: discard).
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.ProcRoot == "" {
		o.ProcRoot = "/proc"
	}
	if o.EtcRoot == "" {
		o.EtcRoot = "/etc"
	}
	if o.UtmpPath == "" {
		o.UtmpPath = "/run/utmp"
	}
	if o.RootPath == "" {
		o.RootPath = "/"
	}
	if o.HomePath == "" {
		o.HomePath = "/root"
	}
	if o.Statfs == nil {
		o.Statfs = statfs
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.SetClock == nil {
		o.SetClock = setRealtime
	}
	return o
}

// Handler returns the agent's HTTP handler: GET /healthz, GET /v1/info and
// POST /v1/exec.
// Other paths get 404 and other methods 405.
func Handler(opts Options) http.Handler {
	s := &server{opts: opts.withDefaults()}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /v1/info", s.info)
	if !s.opts.Legacy {
		mux.HandleFunc("POST "+PathExec, s.exec)
		mux.HandleFunc("POST "+PathClock, s.clock)
	}
	return mux
}

type server struct {
	opts Options
}

func (s *server) healthz(w http.ResponseWriter, r *http.Request) {
	h, err := s.readHealthz()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, h)
}

func (s *server) info(w http.ResponseWriter, r *http.Request) {
	info, err := s.readInfo()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, info)
}

func (s *server) fail(w http.ResponseWriter, r *http.Request, err error) {
	s.opts.Logger.Error("agent request failed", "path", r.URL.Path, "err", err)
	writeJSON(w, http.StatusInternalServerError, errorBody{Error: err.Error()})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		body = []byte(`{"error":"encoding response"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// Serve serves h on l until ctx is done, then shuts down gracefully (bounded
// to a few seconds). It returns nil after a shutdown caused by ctx.
func Serve(ctx context.Context, l net.Listener, h http.Handler) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serving agent on %s: %w", l.Addr(), err)
	case <-ctx.Done():
	}
	shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil {
		_ = srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving agent on %s: %w", l.Addr(), err)
	}
	return nil
}
