// Command fcfake is a fake Firecracker for banger's tests. It behaves like
// Firecracker v1.16.1 on the wire and as a process, as described in
// docs/firecracker-semantics.md (cited as SEMANTICS.md §N), without running
// a guest: same flags and exit codes, an API socket that is never unlinked,
// 204/400 with fault_message, bodies validated against the spec,
// kernel/drive/tap/vsock opened at PUT time, InstanceStart once, SendCtrlAltDel ending the process
// when the guest would reboot through the keyboard controller (reboot=k),
// SIGTERM not handled. The simulated guest answers on vsock with the real
// agent handler.
//
// Switches from the environment, for failures the daemon must survive:
//
//	FCFAKE_RECORD=<path>             append JSON lines: start, each request and response, exit
//	FCFAKE_IGNORE_CTRL_ALT_DEL=1     SendCtrlAltDel returns 204 but the guest ignores it
//	FCFAKE_SHUTDOWN_DELAY=<dur>      how long the guest takes to reboot after Ctrl-Alt-Del (100ms)
//	FCFAKE_EXIT_AFTER_START=<dur>    the VM ends on its own that long after InstanceStart
//	FCFAKE_EXIT_CODE=<n>             exit code for FCFAKE_EXIT_AFTER_START (0)
//	FCFAKE_EXIT_LOG=<line>           with a non-zero FCFAKE_EXIT_CODE: logged (as an error) before the exit
//	FCFAKE_FAIL_START=1              InstanceStart fails with a 400
//	FCFAKE_SOCKET_DELAY=<dur>        the API socket appears that late
//	FCFAKE_AGENT_DOWN=1              vsock CONNECT is never answered (closed, no OK)
//	FCFAKE_AGENT_LEGACY=1            the agent answers as one from before protocol versioning (no exec)
//	FCFAKE_BOOT_DELAY=<dur>          the agent answers only that long after InstanceStart
//	FCFAKE_SSH_LOGINS=<n>            the SSH login count the guest's agent reports (0)
//	FCFAKE_VERSION=<x.y.z>           the Firecracker version claimed (--version, GET /version, snapshots)
//	FCFAKE_FAIL_SNAPSHOT_CREATE=1    PUT /snapshot/create fails with a 400 (the VM stays paused)
//	FCFAKE_FAIL_SNAPSHOT_LOAD=1      PUT /snapshot/load fails, fatally (400, then exit 1)
//	FCFAKE_SNAPSHOT_DELAY=<dur>      snapshot create and load take that long
//
// The guest's agent records a clock step (POST /v1/clock) as a "set_clock"
// line in FCFAKE_RECORD; it never sets the host's clock.
package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Exit codes of Firecracker (src/vmm/src/lib.rs FcExitCode).
const (
	exitOK               = 0
	exitGeneric          = 1
	exitBadConfiguration = 152
	exitArgParsing       = 153
)

const defaultMaxPayload = 51200

// args is the parsed command line.
type args struct {
	apiSock     string
	id          string
	configFile  string
	logPath     string
	level       string
	metricsPath string
	metadata    string
	noAPI       bool
	showLevel   bool
	showOrigin  bool
	enablePCI   bool
	maxPayload  int
	help        bool
	version     bool
}

// flagSpec lists Firecracker's flags: true means the flag takes a value.
var flagSpec = map[string]bool{
	"api-sock": true, "id": true, "config-file": true, "log-path": true, "level": true,
	"metrics-path": true, "seccomp-filter": true, "start-time-us": true, "start-time-cpu-us": true,
	"parent-cpu-time-us": true, "metadata": true, "http-api-max-payload-size": true,
	"mmds-size-limit": true, "describe-snapshot": true,
	"no-api": false, "show-level": false, "show-log-origin": false, "no-seccomp": false,
	"enable-pci": false, "boot-timer": false, "help": false, "version": false,
}

// parseArgs parses argv the way Firecracker's arg parser does: only
// "--flag value" with separate words, no "--flag=value", no repeats, no
// unknown flags, no value starting with "--".
func parseArgs(argv []string) (args, error) {
	seen := map[string]string{}
	for i := 0; i < len(argv); i++ {
		w := argv[i]
		if w == "-h" {
			w = "--help"
		}
		name, ok := strings.CutPrefix(w, "--")
		takesValue, known := flagSpec[name]
		if !ok || !known {
			return args{}, fmt.Errorf("Found argument '%s' which wasn't expected, or isn't valid in this context.", argv[i])
		}
		if _, dup := seen[name]; dup {
			return args{}, fmt.Errorf("The argument '--%s' was provided more than once.", name)
		}
		seen[name] = ""
		if takesValue {
			if i+1 >= len(argv) || strings.HasPrefix(argv[i+1], "--") {
				return args{}, fmt.Errorf("The argument '--%s' requires a value, but none was supplied", name)
			}
			i++
			seen[name] = argv[i]
		}
	}
	a := args{apiSock: "/run/firecracker.socket", id: "anonymous-instance", maxPayload: defaultMaxPayload, level: "Info"}
	str := func(name string, dst *string) {
		if v, ok := seen[name]; ok {
			*dst = v
		}
	}
	flag := func(name string) bool { _, ok := seen[name]; return ok }
	str("api-sock", &a.apiSock)
	str("id", &a.id)
	str("config-file", &a.configFile)
	str("log-path", &a.logPath)
	str("level", &a.level)
	str("metrics-path", &a.metricsPath)
	str("metadata", &a.metadata)
	a.noAPI, a.showLevel, a.showOrigin = flag("no-api"), flag("show-level"), flag("show-log-origin")
	a.enablePCI, a.help, a.version = flag("enable-pci"), flag("help"), flag("version")
	if a.noAPI && !flag("config-file") {
		return args{}, fmt.Errorf("Missing argument: config-file. Argument 'no-api' requires the presence of config-file.")
	}
	if flag("seccomp-filter") && flag("no-seccomp") {
		return args{}, fmt.Errorf("Arguments 'seccomp-filter' and 'no-seccomp' are mutually exclusive.")
	}
	for _, n := range []string{"start-time-us", "start-time-cpu-us", "parent-cpu-time-us", "mmds-size-limit", "http-api-max-payload-size"} {
		if v, ok := seen[n]; ok {
			u, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return args{}, fmt.Errorf("Invalid value for '--%s': %q is not an unsigned integer", n, v)
			}
			if n == "http-api-max-payload-size" {
				a.maxPayload = int(min(u, 1<<31))
			}
		}
	}
	return a, nil
}

// checkInstanceID applies Firecracker's rule: 1 to 64 bytes, each character
// alphanumeric or '-'.
func checkInstanceID(id string) error {
	if len(id) < 1 || len(id) > 64 {
		return fmt.Errorf("InvalidLen(%d, 1, 64)", len(id))
	}
	for i, c := range id {
		if c != '-' && !unicode.IsLetter(c) && !unicode.IsNumber(c) {
			return fmt.Errorf("InvalidChar(%q, %d)", c, utf8.RuneCountInString(id[:i]))
		}
	}
	return nil
}

// abort dies by SIGABRT like Firecracker's panic=abort build: the Go runtime
// turns SIGABRT into a traceback and exit 2, so restore the default action
// with a raw sigaction first.
func abort(msg string) {
	fmt.Fprintf(os.Stderr, "thread 'main' panicked at src/firecracker/src/main.rs:\n%s\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n", msg)
	var act [4]uint64 // struct sigaction with sa_handler = SIG_DFL
	unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(unix.SIGABRT), uintptr(unsafe.Pointer(&act)), 0, 8, 0, 0)
	unix.Kill(os.Getpid(), unix.SIGABRT)
	time.Sleep(time.Second)
	os.Exit(134)
}

func main() {
	a, err := parseArgs(os.Args[1:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "Arguments parsing error: %v\n\nFor more information try --help.\n", err)
		os.Exit(exitArgParsing)
	}
	sw, err := switchesFromEnv(os.Getenv)
	if err != nil {
		fmt.Fprintf(os.Stderr, "fcfake: %v\n", err)
		os.Exit(exitGeneric)
	}
	if a.help || a.version {
		v := fcVersion
		if sw.version != "" {
			v = sw.version
		}
		fmt.Printf("Firecracker v%s\n", v)
		if a.help {
			fmt.Println("\nfcfake: a fake Firecracker for banger's tests (see test/fcfake/main.go for its switches)")
		}
		os.Exit(exitOK)
	}
	if err := checkInstanceID(a.id); err != nil {
		abort("Invalid instance ID: " + err.Error())
	}
	level, ok := parseLevel(a.level)
	if !ok {
		fmt.Fprintf(os.Stderr, "Invalid value for logger level: %s. Possible values: [Off, Error, Warning, Info, Debug, Trace]\n", a.level)
		os.Exit(exitBadConfiguration)
	}
	rec, err := openRecorder(sw.record, a.id)
	if err != nil {
		fmt.Fprintf(os.Stderr, "fcfake: %v\n", err)
		os.Exit(exitGeneric)
	}
	rec.write(event{Event: "start", Args: os.Args[1:], Sock: a.apiSock})

	log := &fcLogger{id: a.id, w: os.Stdout, level: level, showLevel: a.showLevel, showOrigin: a.showOrigin}
	v := newVMM(a, sw, log, rec, os.Stdout)
	if a.logPath != "" {
		f, err := openLogPath(a.logPath)
		if err != nil {
			fmt.Fprintf(os.Stderr, "Failed to initialize logger: Failed to open target file: %s\n", osError(err))
			v.exit(exitGeneric, "opening --log-path")
		}
		log.setFile(f)
	}
	log.logf(levelInfo, "Running Firecracker v%s", v.version())
	if a.metricsPath != "" {
		f, err := openLogPath(a.metricsPath)
		if err != nil {
			log.logf(levelError, "Failed to initialize metrics: Failed to open target file: %s", osError(err))
			v.exit(exitGeneric, "opening --metrics-path")
		}
		v.metrics = f
	}
	if a.metadata != "" {
		if b, err := os.ReadFile(a.metadata); err != nil || !json.Valid(b) {
			log.logf(levelError, "Unable to load metadata from %s", a.metadata)
			v.exit(exitGeneric, "loading --metadata")
		}
	}

	var l *net.UnixListener
	if !a.noAPI {
		time.Sleep(sw.socketDelay)
		l, err = net.ListenUnix("unix", &net.UnixAddr{Name: a.apiSock, Net: "unix"})
		if err != nil {
			msg := fmt.Sprintf("Failed to open the API socket at: %s. Check that it is not already used.", a.apiSock)
			log.logf(levelError, "%s", msg)
			v.exit(exitGeneric, msg)
		}
		l.SetUnlinkOnClose(false) // Firecracker never unlinks its socket
	}
	go v.serveAgent()
	if a.configFile != "" {
		v.apiMu.Lock() // API requests wait until the config-file boot is done
		if err := v.bootFromConfig(a.configFile); err != nil {
			msg := "Building VMM configured from cmdline json failed: " + err.Error()
			log.logf(levelError, "%s", msg)
			v.exit(exitGeneric, msg)
		}
		v.apiMu.Unlock()
	}
	if l == nil {
		select {}
	}
	srv := &http.Server{Handler: v}
	err = srv.Serve(l)
	log.logf(levelError, "API server failed: %v", err)
	v.exit(exitGeneric, "API server failed")
}

// bootFromConfig applies a --config-file (kebab-case top-level keys, the
// same bodies as the API) and starts the VM.
func (v *vmm) bootFromConfig(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading %s: %s", path, osError(err))
	}
	var cfg map[string]json.RawMessage
	if err := json.Unmarshal(data, &cfg); err != nil {
		return err
	}
	one := map[string]func([]byte) error{
		"logger":         v.putLogger,
		"metrics":        v.putMetrics,
		"machine-config": func(b []byte) error { return v.putMachine(b, false) },
		"boot-source":    v.putBootSource,
		"vsock":          v.putVsock,
	}
	many := map[string]struct {
		idField string
		put     func(id string, b []byte) error
	}{
		"drives":             {"drive_id", v.putDrive},
		"network-interfaces": {"iface_id", v.putNet},
	}
	for _, key := range []string{"logger", "metrics", "machine-config", "boot-source", "drives", "network-interfaces", "vsock"} {
		raw, ok := cfg[key]
		if !ok || string(raw) == "null" {
			delete(cfg, key)
			continue
		}
		delete(cfg, key)
		if put, ok := one[key]; ok {
			if err := put(raw); err != nil {
				return fmt.Errorf("%s: %w", key, err)
			}
			continue
		}
		var items []map[string]json.RawMessage
		if err := json.Unmarshal(raw, &items); err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		for _, it := range items {
			var id string
			_ = json.Unmarshal(it[many[key].idField], &id)
			b, _ := json.Marshal(it)
			if err := many[key].put(id, b); err != nil {
				return fmt.Errorf("%s: %w", key, err)
			}
		}
	}
	for key := range cfg {
		return fmt.Errorf("fcfake does not implement config-file section %q", key)
	}
	return v.instanceStart()
}

// switches are the fake's failure knobs, read from the environment.
type switches struct {
	record           string
	ignoreCtrlAltDel bool
	shutdownDelay    time.Duration
	exitAfterStart   time.Duration
	exitCode         int
	exitLog          string
	failStart        bool
	socketDelay      time.Duration
	agentDown        bool
	agentLegacy      bool
	bootDelay        time.Duration
	sshLogins        int

	version            string
	failSnapshotCreate bool
	failSnapshotLoad   bool
	snapshotDelay      time.Duration
}

func switchesFromEnv(getenv func(string) string) (switches, error) {
	sw := switches{record: getenv("FCFAKE_RECORD"), shutdownDelay: 100 * time.Millisecond}
	var err error
	boolean := func(name string, dst *bool) {
		switch v := getenv(name); v {
		case "":
		case "1", "true":
			*dst = true
		case "0", "false":
			*dst = false
		default:
			err = fmt.Errorf("%s=%q: want 1 or 0", name, v)
		}
	}
	duration := func(name string, dst *time.Duration) {
		v := getenv(name)
		if v == "" {
			return
		}
		d, perr := time.ParseDuration(v)
		if perr != nil || d < 0 {
			err = fmt.Errorf("%s=%q: want a duration such as 500ms or 2s", name, v)
			return
		}
		*dst = d
	}
	integer := func(name string, lo, hi int, dst *int) {
		v := getenv(name)
		if v == "" {
			return
		}
		n, perr := strconv.Atoi(v)
		if perr != nil || n < lo || n > hi {
			err = fmt.Errorf("%s=%q: want an integer from %d to %d", name, v, lo, hi)
			return
		}
		*dst = n
	}
	boolean("FCFAKE_IGNORE_CTRL_ALT_DEL", &sw.ignoreCtrlAltDel)
	duration("FCFAKE_SHUTDOWN_DELAY", &sw.shutdownDelay)
	duration("FCFAKE_EXIT_AFTER_START", &sw.exitAfterStart)
	integer("FCFAKE_EXIT_CODE", 0, 255, &sw.exitCode)
	sw.exitLog = getenv("FCFAKE_EXIT_LOG")
	boolean("FCFAKE_FAIL_START", &sw.failStart)
	duration("FCFAKE_SOCKET_DELAY", &sw.socketDelay)
	boolean("FCFAKE_AGENT_DOWN", &sw.agentDown)
	boolean("FCFAKE_AGENT_LEGACY", &sw.agentLegacy)
	duration("FCFAKE_BOOT_DELAY", &sw.bootDelay)
	integer("FCFAKE_SSH_LOGINS", 0, 1<<20, &sw.sshLogins)
	sw.version = getenv("FCFAKE_VERSION")
	boolean("FCFAKE_FAIL_SNAPSHOT_CREATE", &sw.failSnapshotCreate)
	boolean("FCFAKE_FAIL_SNAPSHOT_LOAD", &sw.failSnapshotLoad)
	duration("FCFAKE_SNAPSHOT_DELAY", &sw.snapshotDelay)
	return sw, err
}
