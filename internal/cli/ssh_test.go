package cli

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/api"
)

func TestSSHArgs(t *testing.T) {
	tests := []struct {
		name, key, kh, host string
		cmd                 []string
		want                string
	}{
		{"login", "/k/id", "/s/known_hosts", "172.16.0.2", nil,
			"-i /k/id -o IdentitiesOnly=yes -o UserKnownHostsFile=/s/known_hosts -o StrictHostKeyChecking=accept-new -o ConnectTimeout=5 -- root@172.16.0.2"},
		{"command with dashes", "/k/id", "/s/known_hosts", "10.0.0.9", []string{"ls", "-la", "/root"},
			"-i /k/id -o IdentitiesOnly=yes -o UserKnownHostsFile=/s/known_hosts -o StrictHostKeyChecking=accept-new -o ConnectTimeout=5 -- root@10.0.0.9 ls -la /root"},
		{"command starting with a dash", "/k/id", "/kh", "10.0.0.9", []string{"-v"},
			"-i /k/id -o IdentitiesOnly=yes -o UserKnownHostsFile=/kh -o StrictHostKeyChecking=accept-new -o ConnectTimeout=5 -- root@10.0.0.9 -v"},
		{"percent and space", "/k/100%/id", "/my state/known_hosts", "10.0.0.9", nil,
			`-i /k/100%%/id -o IdentitiesOnly=yes -o UserKnownHostsFile="/my state/known_hosts" -o StrictHostKeyChecking=accept-new -o ConnectTimeout=5 -- root@10.0.0.9`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := strings.Join(sshArgs(tt.key, tt.kh, tt.host, tt.cmd), " ")
			if got != tt.want {
				t.Fatalf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

// fakeDaemon is a stateful stand-in for bangerd: it keeps the VMs, starts
// them, answers health, and logs every call into a shared journal.
type fakeDaemon struct {
	vms     []api.VM
	now     func() time.Time
	journal *[]string
	healthy bool
	reason  string
	uptime  float64
	stopped bool // the VM stops during the session (guest poweroff)
}

func (f *fakeDaemon) find(ref string) *api.VM {
	for i := range f.vms {
		if f.vms[i].ID == ref || f.vms[i].Name == ref {
			return &f.vms[i]
		}
	}
	return nil
}

func (f *fakeDaemon) Call(ctx context.Context, method string, params, out any) error {
	*f.journal = append(*f.journal, method)
	var ref string
	if p, ok := params.(api.VMRef); ok {
		ref = p.Ref
	}
	switch method {
	case api.MethodVMList:
		out.(*api.VMList).VMs = append([]api.VM(nil), f.vms...)
		return nil
	case api.MethodVMTouch:
		// The daemon wakes a sleeping VM before recording the use.
		vm := f.find(ref)
		if vm.State == api.StateSuspended || vm.State == api.StatePaused {
			vm.State, vm.StartedAt = api.StateRunning, f.now()
		}
		if o, ok := out.(*api.VM); ok {
			*o = *vm
		}
		return nil
	case api.MethodVMStart:
		vm := f.find(ref)
		vm.State, vm.StartedAt, vm.IP = api.StateRunning, f.now(), "172.16.0.7"
		*out.(*api.VMResult) = api.VMResult{VM: *vm, Health: &api.Health{VM: vm.Name, Healthy: f.healthy, Reason: f.reason, State: vm.State}}
		return nil
	case api.MethodVMHealth:
		vm := f.find(ref)
		state := vm.State
		if f.stopped {
			state = api.StateStopped
		}
		*out.(*api.Health) = api.Health{VM: vm.Name, State: state, Healthy: f.healthy && state == api.StateRunning, Reason: f.reason, UptimeS: f.uptime}
		return nil
	}
	return fmt.Errorf("fake daemon: unexpected %s", method)
}

// sshCase drives one sshSession against the fake daemon and a fake ssh
// that exits with the next code of codes (the last one repeats).
type sshCase struct {
	vm        api.VM
	startedAt time.Duration // how long before "now" the VM started; 0 = not started
	codes     []int
	cmd       []string
	start     bool
	reminder  bool
	healthy   bool
	stopped   bool
}

type sshResult struct {
	code    int
	err     error
	runs    [][]string
	journal []string
	stderr  string
	elapsed time.Duration
}

func runSSHCase(t *testing.T, c sshCase) sshResult {
	t.Helper()
	clock := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	now := func() time.Time { return clock }
	vm := c.vm
	if c.startedAt > 0 {
		vm.StartedAt = clock.Add(-c.startedAt)
	}
	var journal []string
	d := &fakeDaemon{vms: []api.VM{vm}, now: now, journal: &journal, healthy: c.healthy, reason: "agent did not answer", uptime: 2*3600 + 13*60 + 7, stopped: c.stopped}
	var stderr bytes.Buffer
	var res sshResult
	s := &sshSession{
		daemon: d,
		run: func(ctx context.Context, args []string) (int, error) {
			journal = append(journal, "ssh")
			res.runs = append(res.runs, args)
			code := c.codes[min(len(res.runs), len(c.codes))-1]
			clock = clock.Add(200 * time.Millisecond)
			return code, nil
		},
		stderr:       &stderr,
		now:          now,
		sleep:        func(ctx context.Context, d time.Duration) error { clock = clock.Add(d); return nil },
		key:          "/k/id",
		knownHosts:   "/s/known_hosts",
		bootDeadline: 30 * time.Second,
		startFirst:   c.start,
		reminder:     c.reminder,
	}
	begin := clock
	res.code, res.err = s.connect(context.Background(), "dev", c.cmd)
	res.journal, res.stderr, res.elapsed = journal, stderr.String(), clock.Sub(begin)
	return res
}

func TestSSHSession(t *testing.T) {
	running := api.VM{ID: "abc123", Name: "dev", State: api.StateRunning, IP: "172.16.0.5"}
	stopped := api.VM{ID: "abc123", Name: "dev", State: api.StateStopped, IP: "172.16.0.5"}
	const reminder = "dev is still running (healthy, up 2h13m); stop it with: banger vm stop dev\n"

	t.Run("interactive login touches, connects, reminds", func(t *testing.T) {
		r := runSSHCase(t, sshCase{vm: running, startedAt: time.Hour, codes: []int{0}, reminder: true, healthy: true})
		if r.err != nil || r.code != 0 {
			t.Fatalf("code %d err %v", r.code, r.err)
		}
		if got := strings.Join(r.journal, " "); got != "vm.list vm.touch ssh vm.health" {
			t.Fatalf("calls %q", got)
		}
		if got := r.runs[0][len(r.runs[0])-1]; got != "root@172.16.0.5" {
			t.Fatalf("last arg %q", got)
		}
		if r.stderr != reminder {
			t.Fatalf("stderr %q, want %q", r.stderr, reminder)
		}
	})
	t.Run("a suspended or paused vm is woken through vm.touch first", func(t *testing.T) {
		for _, state := range []string{api.StateSuspended, api.StatePaused} {
			vm := running
			vm.State = state
			r := runSSHCase(t, sshCase{vm: vm, startedAt: time.Hour, codes: []int{0}, cmd: []string{"true"}})
			if r.err != nil || r.code != 0 {
				t.Fatalf("%s: code %d err %v", state, r.code, r.err)
			}
			if got := strings.Join(r.journal, " "); got != "vm.list vm.touch ssh" {
				t.Fatalf("%s: calls %q (one touch, which wakes)", state, got)
			}
			if want := "banger: woke dev (it was " + state + ")\n"; r.stderr != want {
				t.Fatalf("%s: stderr %q, want %q", state, r.stderr, want)
			}
		}
	})
	t.Run("reminder says unhealthy with the reason", func(t *testing.T) {
		r := runSSHCase(t, sshCase{vm: running, startedAt: time.Hour, codes: []int{0}, reminder: true, healthy: false})
		if want := "dev is still running (unhealthy: agent did not answer); stop it with: banger vm stop dev\n"; r.stderr != want {
			t.Fatalf("stderr %q", r.stderr)
		}
	})
	t.Run("no reminder when the vm stopped meanwhile", func(t *testing.T) {
		r := runSSHCase(t, sshCase{vm: running, startedAt: time.Hour, codes: []int{0}, reminder: true, healthy: true, stopped: true})
		if r.stderr != "" {
			t.Fatalf("stderr %q", r.stderr)
		}
	})
	t.Run("no reminder with --no-reminder", func(t *testing.T) {
		r := runSSHCase(t, sshCase{vm: running, startedAt: time.Hour, codes: []int{0}, reminder: false, healthy: true})
		if r.stderr != "" || strings.Contains(strings.Join(r.journal, " "), "vm.health") {
			t.Fatalf("stderr %q calls %v", r.stderr, r.journal)
		}
	})
	t.Run("one-shot command passes through, exit code propagates, no reminder", func(t *testing.T) {
		r := runSSHCase(t, sshCase{vm: running, startedAt: time.Hour, codes: []int{3}, cmd: []string{"false", "-x"}, reminder: true, healthy: true})
		if r.err != nil || r.code != 3 {
			t.Fatalf("code %d err %v", r.code, r.err)
		}
		if got := strings.Join(r.runs[0][len(r.runs[0])-3:], " "); got != "root@172.16.0.5 false -x" {
			t.Fatalf("tail %q", got)
		}
		if r.stderr != "" {
			t.Fatalf("stderr %q", r.stderr)
		}
	})
	t.Run("255 on a vm up for long is not retried", func(t *testing.T) {
		r := runSSHCase(t, sshCase{vm: running, startedAt: time.Hour, codes: []int{255}, cmd: []string{"true"}})
		if r.code != 255 || len(r.runs) != 1 {
			t.Fatalf("code %d runs %d", r.code, len(r.runs))
		}
	})
	t.Run("255 right after boot is retried until ssh connects", func(t *testing.T) {
		r := runSSHCase(t, sshCase{vm: running, startedAt: 2 * time.Second, codes: []int{255, 255, 255, 0}, cmd: []string{"true"}})
		if r.code != 0 || len(r.runs) != 4 || !strings.Contains(r.stderr, "still booting") {
			t.Fatalf("code %d runs %d stderr %q", r.code, len(r.runs), r.stderr)
		}
	})
	t.Run("other exit codes right after boot are not retried", func(t *testing.T) {
		r := runSSHCase(t, sshCase{vm: running, startedAt: 2 * time.Second, codes: []int{1, 0}, cmd: []string{"false"}})
		if r.code != 1 || len(r.runs) != 1 {
			t.Fatalf("code %d runs %d", r.code, len(r.runs))
		}
	})
	t.Run("retries end at the boot deadline", func(t *testing.T) {
		r := runSSHCase(t, sshCase{vm: running, startedAt: 2 * time.Second, codes: []int{255}, cmd: []string{"true"}})
		if r.code != 255 {
			t.Fatalf("code %d", r.code)
		}
		// 28 s of the 30 s window were left; each attempt takes 0.2 s plus
		// a 1 s pause.
		if r.elapsed < 28*time.Second || r.elapsed > 29*time.Second || len(r.runs) < 20 {
			t.Fatalf("gave up after %v and %d runs", r.elapsed, len(r.runs))
		}
	})
	t.Run("stopped without --start is a clear error", func(t *testing.T) {
		r := runSSHCase(t, sshCase{vm: stopped, codes: []int{0}})
		if r.err == nil || len(r.runs) != 0 {
			t.Fatalf("err %v runs %d", r.err, len(r.runs))
		}
		code, msg := classify(r.err)
		if code != ExitFailed || !strings.Contains(msg, "dev is stopped") || !strings.Contains(msg, "--start") {
			t.Fatalf("exit %d msg %q", code, msg)
		}
	})
	t.Run("--start starts, then retries while it boots", func(t *testing.T) {
		r := runSSHCase(t, sshCase{vm: stopped, start: true, codes: []int{255, 0}, reminder: true, healthy: true})
		if r.err != nil || r.code != 0 {
			t.Fatalf("code %d err %v", r.code, r.err)
		}
		if got := strings.Join(r.journal, " "); got != "vm.list vm.start vm.touch ssh ssh vm.health" {
			t.Fatalf("calls %q", got)
		}
		if got := r.runs[1][len(r.runs[1])-1]; got != "root@172.16.0.7" {
			t.Fatalf("connected to %q, want the started VM's address", got)
		}
		if !strings.HasSuffix(r.stderr, reminder) || !strings.Contains(r.stderr, "started dev") {
			t.Fatalf("stderr %q", r.stderr)
		}
	})
	t.Run("--start on a running vm just connects", func(t *testing.T) {
		r := runSSHCase(t, sshCase{vm: running, startedAt: time.Hour, start: true, codes: []int{0}, cmd: []string{"true"}})
		if got := strings.Join(r.journal, " "); got != "vm.list vm.touch ssh" {
			t.Fatalf("calls %q", got)
		}
	})
	t.Run("unknown vm", func(t *testing.T) {
		r := runSSHCase(t, sshCase{vm: api.VM{ID: "zzz", Name: "other", State: api.StateRunning}, codes: []int{0}})
		if _, msg := classify(r.err); !strings.Contains(msg, `no vm named "dev"`) {
			t.Fatalf("err %v", r.err)
		}
	})
}

// TestExecSSH runs a real child through the terminal runner: exit codes
// and signals come back as the shell would report them.
func TestExecSSH(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "ssh")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\necho \"args:$*\"\n[ \"$1\" = kill ] && kill -TERM $$\nexit \"$1\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	run := execSSH(fake, strings.NewReader(""), &out, &out)
	for _, tt := range []struct {
		arg  string
		want int
	}{{"0", 0}, {"7", 7}, {"255", 255}, {"kill", 128 + 15}} {
		code, err := run(context.Background(), []string{tt.arg})
		if err != nil || code != tt.want {
			t.Fatalf("%s: code %d err %v", tt.arg, code, err)
		}
	}
	if !strings.Contains(out.String(), "args:7") {
		t.Fatalf("output %q", out.String())
	}
	if _, err := execSSH(filepath.Join(dir, "missing"), nil, &out, &out)(context.Background(), nil); err == nil {
		t.Fatal("no error for a missing binary")
	}
}

func TestVMSSHWithoutSSHOnPath(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	env := envWithConfig(t, "")
	_, errOut, code := runCLI(t, env, "vm", "ssh", "dev")
	if code != ExitFailed || !strings.Contains(errOut, "ssh is not on PATH") || strings.Count(errOut, "\n") != 1 {
		t.Fatalf("exit %d stderr %q", code, errOut)
	}
}

func TestVMSSHUsage(t *testing.T) {
	env := envWithConfig(t, "")
	for _, args := range [][]string{{"vm", "ssh"}, {"vm", "ssh", "a", "b"}, {"vm", "ssh", "a", "--"}, {"vm", "ssh", "--", "ls"}} {
		_, errOut, code := runCLI(t, env, args...)
		if code != ExitUsage || strings.Contains(errOut, "starting it") {
			t.Fatalf("%v: exit %d stderr %q", args, code, errOut)
		}
	}
}

func TestSSHConfigRender(t *testing.T) {
	got := renderSSHConfig("/data/runtime/id_ed25519", "/state dir/known_hosts")
	want := `# banger VMs: ssh NAME.vm (written by banger ssh-config)
Host *.vm
    User root
    IdentityFile /data/runtime/id_ed25519
    IdentitiesOnly yes
    UserKnownHostsFile "/state dir/known_hosts"
    StrictHostKeyChecking accept-new
`
	if got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestSSHConfigPrint(t *testing.T) {
	env := envWithConfig(t, "ssh_key_path = \"/opt/banger/key\"\n")
	out, _, code := runCLI(t, env, "ssh-config")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	want := renderSSHConfig("/opt/banger/key", filepath.Join(env["BANGER_STATE_DIR"], "known_hosts"))
	if out != want {
		t.Fatalf("got:\n%s\nwant:\n%s", out, want)
	}
}

func TestSSHConfigInstall(t *testing.T) {
	const userCfg = "Host work\n    HostName work.example.com\n    User me\n"
	tests := []struct {
		name     string
		existing *string // nil: no ~/.ssh/config
		symlink  bool
	}{
		{"no config yet", nil, false},
		{"existing config", ptr(userCfg), false},
		{"symlinked config", ptr(userCfg), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := envWithConfig(t, "ssh_key_path = \"/opt/banger/key\"\n")
			sshDir := filepath.Join(env["HOME"], ".ssh")
			cfgPath := filepath.Join(sshDir, "config")
			real := cfgPath
			if tt.existing != nil {
				os.MkdirAll(sshDir, 0o700)
				if tt.symlink {
					real = filepath.Join(env["HOME"], "dotfiles-ssh-config")
					if err := os.Symlink(real, cfgPath); err != nil {
						t.Fatal(err)
					}
				}
				if err := os.WriteFile(real, []byte(*tt.existing), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if _, errOut, code := runCLI(t, env, "ssh-config", "--install"); code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			conf := filepath.Join(sshDir, "banger.conf")
			block, _ := os.ReadFile(conf)
			if string(block) != renderSSHConfig("/opt/banger/key", filepath.Join(env["BANGER_STATE_DIR"], "known_hosts")) {
				t.Fatalf("banger.conf:\n%s", block)
			}
			got, err := os.ReadFile(real)
			if err != nil {
				t.Fatal(err)
			}
			head := sshIncludeMarker + "\nInclude " + conf + "\n"
			if !strings.HasPrefix(string(got), head) {
				t.Fatalf("config does not start with the Include:\n%s", got)
			}
			st, _ := os.Stat(real)
			if tt.existing != nil {
				if string(got) != head+"\n"+*tt.existing {
					t.Fatalf("user's config not kept after the Include:\n%s", got)
				}
				if bak, _ := os.ReadFile(real + ".banger.bak"); string(bak) != *tt.existing {
					t.Fatalf("backup %q", bak)
				}
				if st.Mode().Perm() != 0o644 {
					t.Fatalf("mode changed to %v", st.Mode().Perm())
				}
			} else if st.Mode().Perm() != 0o600 {
				t.Fatalf("new config mode %v, want 0600", st.Mode().Perm())
			}
			if tt.symlink {
				if fi, err := os.Lstat(cfgPath); err != nil || fi.Mode()&os.ModeSymlink == 0 {
					t.Fatalf("symlink replaced: %v %v", fi, err)
				}
			}

			// Second run: nothing changes, not even the inodes.
			before := snapshotDir(t, sshDir, real)
			out, errOut, code := runCLI(t, env, "ssh-config", "--install")
			if code != 0 {
				t.Fatalf("second run exit %d: %s", code, errOut)
			}
			if !strings.Contains(out, "already includes") {
				t.Fatalf("second run said %q", out)
			}
			if after := snapshotDir(t, sshDir, real); after != before {
				t.Fatalf("second run changed files:\n%s\nvs\n%s", before, after)
			}
		})
	}
}

func TestSSHConfigInstallIncludeInsideHost(t *testing.T) {
	env := envWithConfig(t, "")
	sshDir := filepath.Join(env["HOME"], ".ssh")
	os.MkdirAll(sshDir, 0o700)
	cfg := "Host work\n    User me\nInclude banger.conf\n"
	os.WriteFile(filepath.Join(sshDir, "config"), []byte(cfg), 0o600)
	out, _, code := runCLI(t, env, "ssh-config", "--install")
	if code != 0 || !strings.Contains(out, "move the Include line to the top") {
		t.Fatalf("exit %d out %q", code, out)
	}
	if got, _ := os.ReadFile(filepath.Join(sshDir, "config")); string(got) != cfg {
		t.Fatalf("config changed:\n%s", got)
	}
}

func TestFindInclude(t *testing.T) {
	conf := "/h/.ssh/banger.conf"
	tests := []struct {
		cfg           string
		found, scoped bool
	}{
		{"", false, false},
		{"Include /h/.ssh/banger.conf\n", true, false},
		{"include=banger.conf\n", true, false},
		{"  INCLUDE  other.conf ~/.ssh/banger.conf\n", true, false},
		{"Include \"/h/.ssh/banger.conf\"\n", true, false},
		{"# Include /h/.ssh/banger.conf\n", false, false},
		{"Include /h/.ssh/banger.conf.old\n", false, false},
		{"Match all\nInclude /h/.ssh/banger.conf\n", true, true},
	}
	for _, tt := range tests {
		found, scoped := findInclude([]byte(tt.cfg), conf, "/h/.ssh")
		if found != tt.found || scoped != tt.scoped {
			t.Errorf("%q: found %v scoped %v, want %v %v", tt.cfg, found, scoped, tt.found, tt.scoped)
		}
	}
}

func ptr[T any](v T) *T { return &v }

// snapshotDir renders names, inodes, sizes and mtimes of dir's files and
// of extra, to compare before and after.
func snapshotDir(t *testing.T, dir, extra string) string {
	t.Helper()
	var b strings.Builder
	ents, _ := os.ReadDir(dir)
	paths := []string{extra}
	for _, e := range ents {
		paths = append(paths, filepath.Join(dir, e.Name()))
	}
	for _, p := range paths {
		st, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s %v %d %s\n", p, st.Sys(), st.Size(), st.ModTime())
	}
	return b.String()
}
