// Package config owns banger's file locations, its configuration keys with
// their defaults, loading from config.toml and the environment, validation,
// legacy key names, and disk size parsing.
package config

import (
	"fmt"
	"path/filepath"
)

// MaxSocketPath is the longest path a unix socket can be bound to on Linux
// (sun_path is 108 bytes including the terminating NUL).
const MaxSocketPath = 107

// Paths are banger's file locations, derived from the environment.
type Paths struct {
	ConfigFile string // BANGER_CONFIG, else $XDG_CONFIG_HOME/banger/config.toml, else ~/.config/banger/config.toml
	StateDir   string // BANGER_STATE_DIR, else $XDG_STATE_HOME/banger, else ~/.local/state/banger
	DataDir    string // $XDG_DATA_HOME/banger, else ~/.local/share/banger; StateDir/data when BANGER_STATE_DIR is set
	SocketDir  string // $XDG_RUNTIME_DIR/banger, else StateDir/run
	Socket     string // SocketDir/bangerd.sock
	LockFile   string // SocketDir/bangerd.lock
	LogFile    string // StateDir/bangerd.log
	DBFile     string // StateDir/banger.db
	VMsDir     string // StateDir/vms
	ImagesDir  string // StateDir/images
}

// DefaultPaths computes Paths from an environment lookup (os.Getenv in
// production, a map in tests).
//
// XDG variables that are not absolute paths are ignored, as the XDG base
// directory specification asks. BANGER_CONFIG and BANGER_STATE_DIR may be
// relative; they are made absolute against the working directory. HOME is
// needed only for the locations no variable overrides. The socket path must
// fit a unix socket address (MaxSocketPath bytes).
func DefaultPaths(getenv func(string) string) (Paths, error) {
	home := getenv("HOME")
	fromHome := func(what string, elem ...string) (string, error) {
		if home == "" || !filepath.IsAbs(home) {
			return "", fmt.Errorf("locating banger's %s: HOME is not set to an absolute path; set HOME (or the XDG or BANGER_ variable for it)", what)
		}
		return filepath.Join(append([]string{home}, elem...)...), nil
	}
	xdg := func(name string) string {
		v := getenv(name)
		if v == "" || !filepath.IsAbs(v) {
			return ""
		}
		return filepath.Clean(v)
	}
	override := func(name string) (string, error) {
		v := getenv(name)
		if v == "" {
			return "", nil
		}
		abs, err := filepath.Abs(v)
		if err != nil {
			return "", fmt.Errorf("making %s=%q absolute: %w", name, v, err)
		}
		return abs, nil
	}

	var p Paths
	var err error

	if p.ConfigFile, err = override("BANGER_CONFIG"); err != nil {
		return Paths{}, err
	}
	if p.ConfigFile == "" {
		if dir := xdg("XDG_CONFIG_HOME"); dir != "" {
			p.ConfigFile = filepath.Join(dir, "banger", "config.toml")
		} else if p.ConfigFile, err = fromHome("config file", ".config", "banger", "config.toml"); err != nil {
			return Paths{}, err
		}
	}

	stateOverride, err := override("BANGER_STATE_DIR")
	if err != nil {
		return Paths{}, err
	}
	switch {
	case stateOverride != "":
		p.StateDir = stateOverride
	case xdg("XDG_STATE_HOME") != "":
		p.StateDir = filepath.Join(xdg("XDG_STATE_HOME"), "banger")
	default:
		if p.StateDir, err = fromHome("state directory", ".local", "state", "banger"); err != nil {
			return Paths{}, err
		}
	}

	switch {
	case stateOverride != "":
		// Tests set BANGER_STATE_DIR and expect everything in one temp dir.
		p.DataDir = filepath.Join(p.StateDir, "data")
	case xdg("XDG_DATA_HOME") != "":
		p.DataDir = filepath.Join(xdg("XDG_DATA_HOME"), "banger")
	default:
		if p.DataDir, err = fromHome("data directory", ".local", "share", "banger"); err != nil {
			return Paths{}, err
		}
	}

	if dir := xdg("XDG_RUNTIME_DIR"); dir != "" {
		p.SocketDir = filepath.Join(dir, "banger")
	} else {
		p.SocketDir = filepath.Join(p.StateDir, "run")
	}
	p.Socket = filepath.Join(p.SocketDir, "bangerd.sock")
	p.LockFile = filepath.Join(p.SocketDir, "bangerd.lock")
	p.LogFile = filepath.Join(p.StateDir, "bangerd.log")
	p.DBFile = filepath.Join(p.StateDir, "banger.db")
	p.VMsDir = filepath.Join(p.StateDir, "vms")
	p.ImagesDir = filepath.Join(p.StateDir, "images")

	if len(p.Socket) > MaxSocketPath {
		return Paths{}, fmt.Errorf("daemon socket path %q is %d bytes, over the %d-byte limit of a unix socket; point XDG_RUNTIME_DIR (or BANGER_STATE_DIR) at a shorter directory",
			p.Socket, len(p.Socket), MaxSocketPath)
	}
	return p, nil
}
