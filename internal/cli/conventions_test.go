//go:build !banger_front

package cli

import (
	"strings"
	"testing"
)

// TestCLIConventions is the command line's contract, docker/limactl/
// multipass style: each row is a command line, its exit code and the one
// stderr line it prints. It runs the cobra tree in-process; no row reaches
// a daemon (BANGER_DAEMON_BIN names a missing file, so one that tried would
// exit 1 saying so).
func TestCLIConventions(t *testing.T) {
	env := envWithConfig(t, "")
	tests := []struct {
		args   []string
		code   int
		stderr string // the whole line ("" for none)
		stdout string // a substring of stdout
	}{
		// Unknown subcommands are errors with a suggestion, at every level.
		{[]string{"vm", "frobnicate"}, 2, "banger: unknown command \"frobnicate\" for \"banger vm\"; see `banger vm --help` for its commands", ""},
		{[]string{"vm", "stpo", "dev"}, 2, `banger: unknown command "stpo" for "banger vm"; did you mean "stop"?`, ""},
		{[]string{"vm", "remove", "dev"}, 2, `banger: unknown command "remove" for "banger vm"; did you mean "delete"?`, ""},
		{[]string{"image", "build", "foo"}, 2, "banger: unknown command \"foo\" for \"banger image build\"; see `banger image build --help` for its commands", ""},
		{[]string{"imgae", "list"}, 2, `banger: unknown command "imgae" for "banger"; did you mean "image"?`, ""},
		{[]string{"dns", "frob"}, 2, "banger: unknown command \"frob\" for \"banger dns\"; see `banger dns --help` for its commands", ""},
		// A group alone prints its help.
		{[]string{"vm"}, 0, "", "banger vm [command]"},
		// --version.
		{[]string{"--version"}, 0, "", "banger test (commit unknown, built unknown)"},
		// Argument counts say what is expected.
		{[]string{"vm", "logs"}, 2, "banger vm logs: needs a VM name (see `banger vm logs --help`)", ""},
		{[]string{"vm", "logs", "a", "b"}, 2, "banger vm logs: takes only a VM name, got 2: a b (see `banger vm logs --help`)", ""},
		{[]string{"vm", "stop"}, 2, "banger vm stop: needs at least one VM name (see `banger vm stop --help`)", ""},
		{[]string{"vm", "create", "a", "b"}, 2, "banger vm create: takes only a name, got 2: a b (see `banger vm create --help`)", ""},
		{[]string{"vm", "list", "x"}, 2, "banger vm list: takes no arguments, got \"x\" (see `banger vm list --help`)", ""},
		{[]string{"image", "delete"}, 2, "banger image delete: needs an image name (see `banger image delete --help`)", ""},
		{[]string{"completion"}, 2, "banger completion: needs one of bash, zsh or fish (see `banger completion --help`)", ""},
		{[]string{"vm", "show", ""}, 2, "banger vm show: the VM name is empty; give a VM name (see `banger vm show --help`)", ""},
		{[]string{"vm", "stop", "a", ""}, 2, "banger vm stop: the VM name is empty; give a VM name (see `banger vm stop --help`)", ""},
		{[]string{"vm", "suspend"}, 2, "banger vm suspend: needs at least one VM name (see `banger vm suspend --help`)", ""},
		{[]string{"vm", "pause"}, 2, "banger vm pause: needs at least one VM name (see `banger vm pause --help`)", ""},
		{[]string{"vm", "resume", ""}, 2, "banger vm resume: the VM name is empty; give a VM name (see `banger vm resume --help`)", ""},
		{[]string{"vm", "start", "--cold"}, 2, "banger vm start: needs at least one VM name (see `banger vm start --help`)", ""},
		{[]string{"vm", "suspend", "a", "--cold"}, 2, "banger: unknown flag: --cold (see `banger vm suspend --help`)", ""},
		// Aliases: rm and ps.
		{[]string{"vm", "rm"}, 2, "banger vm delete: needs at least one VM name (see `banger vm delete --help`)", ""},
		{[]string{"vm", "ps", "x"}, 2, "banger vm list: takes no arguments, got \"x\" (see `banger vm list --help`)", ""},
		{[]string{"image", "rm"}, 2, "banger image delete: needs an image name (see `banger image delete --help`)", ""},
		// Sizes with units for --memory; --cpus is --vcpu.
		{[]string{"vm", "create", "ok", "--memory", "4X"}, 2, `banger: --memory "4X": unknown unit "X"; use K, M, G or T (or KiB, MiB, GiB, TiB), all 1024-based`, ""},
		{[]string{"vm", "create", "ok", "--memory", "64M"}, 2, "banger: --memory 64M is too small; use at least 128 MiB", ""},
		{[]string{"vm", "create", "ok", "--memory", "100"}, 2, "banger: --memory 100 MiB is too small; use at least 128 (or a size such as 2G)", ""},
		{[]string{"vm", "create", "ok", "--memory", "1.0001G"}, 2, `banger: --memory "1.0001G" is not a whole number of bytes`, ""},
		{[]string{"vm", "create", "ok", "--memory", "1025K"}, 2, `banger: --memory "1025K" is not a whole number of MiB; use e.g. 2M`, ""},
		{[]string{"vm", "create", "ok", "--cpus", "0"}, 2, "banger: --vcpu 0 is out of range; use 1 to 32", ""},
		{[]string{"vm", "set", "a", "--cpus", "64"}, 2, "banger: --vcpu 64 is out of range; use 1 to 32", ""},
		// Valid sizes get past validation to the daemon (here: none).
		{[]string{"vm", "create", "ok", "--memory", "4G", "--cpus", "2"}, 1, "banger: bangerd not found at " + env["BANGER_DAEMON_BIN"] + " (BANGER_DAEMON_BIN); unset it or point it at bangerd", ""},
		// Preflight names are checked.
		{[]string{"doctor", "--ignore-preflight-errors", "kvm,kvmm"}, 2, `banger: --ignore-preflight-errors: "kvmm" is not a preflight check; use kvm, pvm, vhost_vsock, firecracker, kernel, agent, sudo, device_mapper, loop, tun, nat, forward_policy, dns_port, state_dir, debootstrap, or all`, ""},
		// vm cp: exactly one side is VM:PATH; local paths are checked first.
		{[]string{"vm", "cp"}, 2, "banger vm cp: needs SRC and DST, one of them VM:PATH, e.g. `banger vm cp dev:/root/notes.txt .` (see `banger vm cp --help`)", ""},
		{[]string{"vm", "cp", "a", "b"}, 2, "banger: vm cp needs one side as VM:PATH, e.g. `banger vm cp dev:/root/notes.txt .` (got a and b)", ""},
		{[]string{"vm", "cp", "-", "./x:y"}, 2, "banger: vm cp needs one side as VM:PATH, e.g. `banger vm cp dev:/root/notes.txt .` (got - and ./x:y)", ""},
		{[]string{"vm", "cp", "dev:/a", "web:/b"}, 2, "banger: vm cp copies between the host and one VM; make SRC or DST a local path (got dev:/a and web:/b)", ""},
		{[]string{"vm", "cp", "dev:", "/tmp"}, 2, "banger: vm cp: give a guest path after dev:, e.g. dev:/root/", ""},
		{[]string{"vm", "cp", "/nonexistent-banger-cp", "dev:/root/"}, 2, "banger: vm cp: no such file or directory: /nonexistent-banger-cp", ""},
		{[]string{"vm", "cp", "dev:/x", "/nonexistent-banger-cp/sub"}, 2, "banger: vm cp: /nonexistent-banger-cp/sub does not exist (its parent /nonexistent-banger-cp must be an existing directory)", ""},
		{[]string{"vm", "cp", "dev:/x", "/tmp", "extra"}, 2, "banger vm cp: needs SRC and DST, one of them VM:PATH, e.g. `banger vm cp dev:/root/notes.txt .` (see `banger vm cp --help`)", ""},
		{[]string{"vm", "cp", "dev:/x", "/tmp"}, 1, "banger: bangerd not found at " + env["BANGER_DAEMON_BIN"] + " (BANGER_DAEMON_BIN); unset it or point it at bangerd", ""},
		// Flags.
		{[]string{"vm", "list", "--bogus"}, 2, "banger: unknown flag: --bogus (see `banger vm list --help`)", ""},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			out, errOut, code := runCLI(t, env, tt.args...)
			lines := strings.Split(strings.TrimSpace(errOut), "\n")
			// "starting it" precedes the no-daemon error; it is not the error line.
			if len(lines) > 1 && strings.Contains(lines[0], "starting it") {
				lines = lines[1:]
			}
			got := strings.Join(lines, "\n")
			if code != tt.code || got != tt.stderr {
				t.Fatalf("exit %d, stderr %q\nwant exit %d, stderr %q", code, got, tt.code, tt.stderr)
			}
			if !strings.Contains(out, tt.stdout) {
				t.Fatalf("stdout %q lacks %q", out, tt.stdout)
			}
		})
	}
}

func TestParseMemoryMiB(t *testing.T) {
	for in, want := range map[string]int{"4096": 4096, "4G": 4096, "4GiB": 4096, "512M": 512, "1.5G": 1536, "128": 128, "131072K": 128} {
		if got, err := parseMemoryMiB(in); err != nil || got != want {
			t.Errorf("parseMemoryMiB(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "-1", "4GB", "lots", "64M", "2E"} {
		if _, err := parseMemoryMiB(in); err == nil {
			t.Errorf("parseMemoryMiB(%q) accepted", in)
		} else if code, _ := classify(err); code != ExitUsage {
			t.Errorf("parseMemoryMiB(%q): exit %d, want 2", in, code)
		}
	}
}
