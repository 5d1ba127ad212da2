package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func envMap(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestDefaultPaths(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		env  map[string]string
		want Paths
	}{
		{
			name: "home only",
			env:  map[string]string{"HOME": "/home/u"},
			want: Paths{
				ConfigFile: "/home/u/.config/banger/config.toml",
				StateDir:   "/home/u/.local/state/banger",
				DataDir:    "/home/u/.local/share/banger",
				SocketDir:  "/home/u/.local/state/banger/run",
				Socket:     "/home/u/.local/state/banger/run/bangerd.sock",
				LockFile:   "/home/u/.local/state/banger/run/bangerd.lock",
				LogFile:    "/home/u/.local/state/banger/bangerd.log",
				DBFile:     "/home/u/.local/state/banger/banger.db",
				VMsDir:     "/home/u/.local/state/banger/vms",
				ImagesDir:  "/home/u/.local/state/banger/images",
			},
		},
		{
			name: "xdg variables",
			env: map[string]string{
				"HOME":            "/home/u",
				"XDG_CONFIG_HOME": "/xc",
				"XDG_STATE_HOME":  "/xs/",
				"XDG_DATA_HOME":   "/xd",
				"XDG_RUNTIME_DIR": "/run/user/1000",
			},
			want: Paths{
				ConfigFile: "/xc/banger/config.toml",
				StateDir:   "/xs/banger",
				DataDir:    "/xd/banger",
				SocketDir:  "/run/user/1000/banger",
				Socket:     "/run/user/1000/banger/bangerd.sock",
				LockFile:   "/run/user/1000/banger/bangerd.lock",
				LogFile:    "/xs/banger/bangerd.log",
				DBFile:     "/xs/banger/banger.db",
				VMsDir:     "/xs/banger/vms",
				ImagesDir:  "/xs/banger/images",
			},
		},
		{
			name: "relative xdg variables are ignored",
			env: map[string]string{
				"HOME":            "/home/u",
				"XDG_CONFIG_HOME": "xc",
				"XDG_STATE_HOME":  "./xs",
				"XDG_DATA_HOME":   "xd",
				"XDG_RUNTIME_DIR": "run",
			},
			want: Paths{
				ConfigFile: "/home/u/.config/banger/config.toml",
				StateDir:   "/home/u/.local/state/banger",
				DataDir:    "/home/u/.local/share/banger",
				SocketDir:  "/home/u/.local/state/banger/run",
				Socket:     "/home/u/.local/state/banger/run/bangerd.sock",
				LockFile:   "/home/u/.local/state/banger/run/bangerd.lock",
				LogFile:    "/home/u/.local/state/banger/bangerd.log",
				DBFile:     "/home/u/.local/state/banger/banger.db",
				VMsDir:     "/home/u/.local/state/banger/vms",
				ImagesDir:  "/home/u/.local/state/banger/images",
			},
		},
		{
			name: "banger variables win over xdg and keep data in the state dir",
			env: map[string]string{
				"HOME":             "/home/u",
				"XDG_CONFIG_HOME":  "/xc",
				"XDG_STATE_HOME":   "/xs",
				"XDG_DATA_HOME":    "/xd",
				"BANGER_CONFIG":    "/t/cfg.toml",
				"BANGER_STATE_DIR": "/t/state",
			},
			want: Paths{
				ConfigFile: "/t/cfg.toml",
				StateDir:   "/t/state",
				DataDir:    "/t/state/data",
				SocketDir:  "/t/state/run",
				Socket:     "/t/state/run/bangerd.sock",
				LockFile:   "/t/state/run/bangerd.lock",
				LogFile:    "/t/state/bangerd.log",
				DBFile:     "/t/state/banger.db",
				VMsDir:     "/t/state/vms",
				ImagesDir:  "/t/state/images",
			},
		},
		{
			name: "banger variables need no HOME; relative ones are made absolute",
			env: map[string]string{
				"BANGER_CONFIG":    "cfg.toml",
				"BANGER_STATE_DIR": "st",
				"XDG_RUNTIME_DIR":  "/run/user/0",
			},
			want: Paths{
				ConfigFile: filepath.Join(wd, "cfg.toml"),
				StateDir:   filepath.Join(wd, "st"),
				DataDir:    filepath.Join(wd, "st", "data"),
				SocketDir:  "/run/user/0/banger",
				Socket:     "/run/user/0/banger/bangerd.sock",
				LockFile:   "/run/user/0/banger/bangerd.lock",
				LogFile:    filepath.Join(wd, "st", "bangerd.log"),
				DBFile:     filepath.Join(wd, "st", "banger.db"),
				VMsDir:     filepath.Join(wd, "st", "vms"),
				ImagesDir:  filepath.Join(wd, "st", "images"),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DefaultPaths(envMap(tt.env))
			if err != nil {
				t.Fatalf("DefaultPaths: %v", err)
			}
			if got != tt.want {
				t.Errorf("DefaultPaths =\n %+v\nwant\n %+v", got, tt.want)
			}
		})
	}
}

func TestDefaultPathsErrors(t *testing.T) {
	long := "/" + strings.Repeat("d", 100)
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"no HOME", map[string]string{}, "HOME is not set"},
		{"relative HOME", map[string]string{"HOME": "home/u"}, "HOME is not set to an absolute path"},
		{"no HOME for the data dir", map[string]string{"XDG_CONFIG_HOME": "/c", "XDG_STATE_HOME": "/s"}, "data directory"},
		{"socket path too long", map[string]string{"HOME": "/h", "XDG_RUNTIME_DIR": long}, "over the 107-byte limit"},
		{"socket path too long from the state dir", map[string]string{"BANGER_STATE_DIR": long, "BANGER_CONFIG": "/c"}, "XDG_RUNTIME_DIR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DefaultPaths(envMap(tt.env))
			if err == nil {
				t.Fatalf("DefaultPaths succeeded, want error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q: want one line containing %q", err, tt.want)
			}
		})
	}
}
