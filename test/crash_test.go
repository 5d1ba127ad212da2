//go:build system

package test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"banger/internal/api"
)

// soakCounts is what the crash soak checked, summed over its rounds.
type soakCounts struct {
	rounds, ops, daemonKills, vmKills          int
	intentsAfterKill, vms, adopted             int
	taps, nat, procs, dirs, seeds, sampleCalls int
	slowest                                    time.Duration
}

// TestCrashSoak is issue 11's crash soak: rounds of 6–16 random concurrent
// creates, starts, stops, restarts, kills and deletes (every other round
// with slow boots, slow shutdowns and late API sockets from fcfake), bangerd
// SIGKILLed at a random moment, then `banger daemon start`. After every
// round: daemon start answered within 2 s; no VM is left starting or
// stopping; VMs running at the kill are adopted with the same PID; nothing
// leaks (unmarked or orphan taps, NAT elements, Firecracker processes, loop
// or dm devices, VM directories, seeds, probe files); no intent is left;
// PRAGMA integrity_check is ok; and start, stop and delete succeed on a
// sample of the VMs. It fails on the first leak.
//
// BANGER_SOAK_ROUNDS (default 40) and BANGER_SOAK_SEED override the round
// count and the random seed (printed, for replaying a failure).
func TestCrashSoak(t *testing.T) {
	rounds := 40
	if v, err := strconv.Atoi(os.Getenv("BANGER_SOAK_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	seed := uint64(time.Now().UnixNano())
	if v, err := strconv.ParseUint(os.Getenv("BANGER_SOAK_SEED"), 10, 64); err == nil {
		seed = v
	}
	t.Logf("crash soak: %d rounds, seed %d (BANGER_SOAK_SEED to replay)", rounds, seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))

	e := newEnv(t, "")
	base := []string{"BANGER_STOP_GRACE=1s", "BANGER_BOOT_DEADLINE=4s", "BANGER_DEFAULT_DISK_SIZE=64M"}
	e.extra = base
	e.registerImage()
	e.ok("daemon", "start")
	var c soakCounts
	start := time.Now()
	for r := range rounds {
		c.rounds++
		s := soakRound{e: e, rng: rng, round: r, c: &c}
		s.run()
		// The next round's daemon, with that round's fcfake switches,
		// does this round's recovery.
		e.extra = append(slices.Clone(base), s.switches(r+1)...)
		took := e.startDaemon()
		c.slowest = max(c.slowest, took)
		if took > 2*time.Second {
			t.Fatalf("round %d: daemon start took %s, want under 2s", r, took)
		}
		e.waitReconciled()
		s.check()
		s.sample()
	}
	t.Logf("crash soak done in %s: %d rounds, %d operations, %d bangerd SIGKILLs, %d vm kills; checked %d vms, %d adoptions with the same pid, %d taps, %d nat elements, %d firecracker processes, %d vm directories, %d seeds, %d intents found after kills (all finished), %d start/stop/delete calls; slowest daemon start %s",
		time.Since(start).Round(time.Second), c.rounds, c.ops, c.daemonKills, c.vmKills, c.vms, c.adopted, c.taps, c.nat, c.procs, c.dirs, c.seeds, c.intentsAfterKill, c.sampleCalls, c.slowest.Round(time.Millisecond))
	e.ok("daemon", "stop")
}

type soakRound struct {
	e       *env
	rng     *rand.Rand
	round   int
	c       *soakCounts
	adopted map[string]int // vm id -> pid of the VMs running, process alive, at the kill
	created int
}

// switches are the fcfake switches of round r: every other round slow.
func (s *soakRound) switches(r int) []string {
	if r%2 == 0 {
		return nil
	}
	ms := func(lo, hi int) string { return fmt.Sprintf("%dms", lo+s.rng.IntN(hi-lo)) }
	return []string{"FCFAKE_SOCKET_DELAY=" + ms(100, 800), "FCFAKE_BOOT_DELAY=" + ms(200, 1500), "FCFAKE_SHUTDOWN_DELAY=" + ms(500, 2500)}
}

// run starts 6–16 random operations at once and SIGKILLs bangerd while
// they run.
func (s *soakRound) run() {
	e, t := s.e, s.e.t
	vms := e.vms()
	n := 6 + s.rng.IntN(11)
	var cmds []*exec.Cmd
	total := len(vms)
	for range n {
		var args []string
		pick := func() string { return vms[s.rng.IntN(len(vms))].Name }
		switch k := s.rng.IntN(10); {
		case len(vms) == 0 || (k < 3 && total < 14):
			s.created++
			total++
			args = []string{"vm", "create", fmt.Sprintf("r%dc%d", s.round, s.created), "--quiet"}
			if s.rng.IntN(2) == 0 {
				args = append(args, "--nat")
			}
		case k < 5:
			args = []string{"vm", "start", pick()}
		case k < 7:
			args = []string{"vm", "stop", pick()}
		case k == 7:
			args = []string{"vm", "restart", pick()}
		case k == 8:
			args = []string{"vm", "kill", pick()}
			s.c.vmKills++
		default:
			args = []string{"vm", "delete", pick()}
		}
		cmds = append(cmds, e.bangerAsync(args...))
	}
	s.c.ops += n
	pid := e.daemonLockPID()
	// Half the kills come early, while most operations are in flight.
	if s.rng.IntN(2) == 0 {
		time.Sleep(time.Duration(10+s.rng.IntN(400)) * time.Millisecond)
	} else {
		time.Sleep(time.Duration(400+s.rng.IntN(1100)) * time.Millisecond)
	}
	e.killDaemon(pid)
	s.c.daemonKills++
	for _, cmd := range cmds {
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Fatalf("round %d: banger %v did not end after bangerd was killed", s.round, cmd.Args)
		}
	}
	snap := e.readStore()
	s.c.intentsAfterKill += len(snap.intents)
	s.adopted = map[string]int{}
	for _, v := range snap.vms {
		if v.State == api.StateRunning && v.PID > 0 && alive(v.PID) {
			s.adopted[v.ID] = v.PID
		}
	}
}

// check asserts the state after recovery; it fails on the first leak.
func (s *soakRound) check() {
	e, t, r := s.e, s.e.t, s.round
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("round %d: "+format+"\ndaemon log:\n%s", append([]any{r}, append(args, e.daemonLogTail())...)...)
	}
	vms := e.vms()
	running := map[string]api.VM{}
	ids := map[string]bool{}
	for _, v := range vms {
		ids[v.ID] = true
		switch v.State {
		case api.StateRunning:
			running[v.Tap] = v
		case api.StateCreated, api.StateStopped, api.StateError:
		default:
			fail("vm %s left %s after recovery", v.Name, v.State)
		}
	}
	s.c.vms += len(vms)
	for id, pid := range s.adopted {
		if !alive(pid) {
			continue // ended on its own meanwhile (a kill in flight)
		}
		var got *api.VM
		for i := range vms {
			if vms[i].ID == id {
				got = &vms[i]
			}
		}
		if got == nil || got.State != api.StateRunning || got.PID != pid {
			fail("vm %s was running with pid %d at the kill and its process lives, but now: %+v", id, pid, got)
		}
		s.c.adopted++
	}
	snap := e.readStore() // also runs PRAGMA integrity_check
	if len(snap.intents) != 0 {
		fail("intents left after recovery: %+v", snap.intents)
	}
	// Taps: exactly the running VMs', each marked as banger's.
	links := e.links()
	var taps []string
	for name, l := range links {
		if !strings.HasPrefix(name, "bgt-") || strings.HasPrefix(name, "bgt-p") {
			continue
		}
		taps = append(taps, name)
		if l["ifalias"] != "banger" {
			fail("tap %s has no banger mark (ifalias %v)", name, l["ifalias"])
		}
		if _, ok := running[name]; !ok {
			fail("orphan tap %s (no running vm owns it)", name)
		}
	}
	if len(taps) != len(running) {
		fail("taps %v, want one per running vm (%d)", taps, len(running))
	}
	s.c.taps += len(taps)
	// NAT elements: exactly the running NATed VMs'.
	var wantNAT []string
	for _, v := range running {
		if v.NAT {
			wantNAT = append(wantNAT, v.IP)
		}
	}
	sort.Strings(wantNAT)
	if got := e.natSetElems(); !slices.Equal(got, wantNAT) {
		fail("nat elements %v, want %v", got, wantNAT)
	}
	s.c.nat += len(wantNAT)
	// Firecracker processes: exactly the running VMs'.
	procs := e.fcProcesses()
	var wantProcs []int
	for _, v := range running {
		wantProcs = append(wantProcs, v.PID)
	}
	sort.Ints(procs)
	sort.Ints(wantProcs)
	if !slices.Equal(procs, wantProcs) {
		fail("firecracker processes %v, want the running vms' %v", procs, wantProcs)
	}
	s.c.procs += len(procs)
	// Loop and dm devices backed by this installation: none (copy driver).
	if out, err := exec.Command("losetup", "-l", "-n", "-O", "BACK-FILE").CombinedOutput(); err == nil && strings.Contains(string(out), e.dir) {
		fail("loop devices backed by banger files: %s", out)
	}
	if ents, err := os.ReadDir("/dev/mapper"); err == nil {
		for _, ent := range ents {
			for id := range ids {
				if strings.Contains(ent.Name(), id) {
					fail("dm device %s", ent.Name())
				}
			}
		}
	}
	// VM directories: exactly the VMs'.
	ents, _ := os.ReadDir(filepath.Join(e.state, "vms"))
	for _, ent := range ents {
		if !ids[ent.Name()] {
			fail("orphan vm directory %s", ent.Name())
		}
	}
	if len(ents) != len(vms) {
		fail("%d vm directories for %d vms", len(ents), len(vms))
	}
	s.c.dirs += len(ents)
	// Seeds: only of live images, none half-built.
	live := map[string]bool{}
	for _, im := range snap.images {
		live[im.ID] = true
	}
	seeds, _ := os.ReadDir(filepath.Join(e.state, "seeds"))
	for _, sd := range seeds {
		if sd.Name() == "roots" && sd.IsDir() { // grown root images, one directory per image
			grown, _ := os.ReadDir(filepath.Join(e.state, "seeds", "roots"))
			for _, g := range grown {
				files, _ := os.ReadDir(filepath.Join(e.state, "seeds", "roots", g.Name()))
				for _, f := range files {
					if !live[g.Name()] || strings.HasSuffix(f.Name(), ".tmp") {
						fail("orphan or half-built grown root %s/%s", g.Name(), f.Name())
					}
				}
			}
			continue
		}
		id, _, _ := strings.Cut(sd.Name(), "-")
		if !live[id] || strings.HasSuffix(sd.Name(), ".tmp") {
			fail("orphan or half-built seed %s", sd.Name())
		}
	}
	s.c.seeds += len(seeds)
	if probes, _ := filepath.Glob(filepath.Join(e.state, ".doctor-*")); len(probes) != 0 {
		fail("probe files left: %v", probes)
	}
}

// sample runs stop, start and delete on VMs of each kind (and deletes VMs
// beyond a dozen), checks each succeeded and what it left.
func (s *soakRound) sample() {
	e, t := s.e, s.e.t
	vms := e.vms()
	s.rng.Shuffle(len(vms), func(i, j int) { vms[i], vms[j] = vms[j], vms[i] })
	type call struct {
		args []string
		name string
		want string // state after, "" for gone
	}
	var calls []call
	used := map[string]bool{}
	take := func(ok func(api.VM) bool, verb, want string) {
		for _, v := range vms {
			if !used[v.Name] && ok(v) {
				used[v.Name] = true
				calls = append(calls, call{[]string{"vm", verb, v.Name}, v.Name, want})
				return
			}
		}
	}
	isRunning := func(v api.VM) bool { return v.State == api.StateRunning }
	take(isRunning, "stop", api.StateStopped)
	take(func(v api.VM) bool { return !isRunning(v) }, "start", api.StateRunning)
	take(func(api.VM) bool { return true }, "delete", "")
	for left := len(vms) - 12; left > 0; left-- {
		take(func(api.VM) bool { return true }, "delete", "")
	}
	var wg sync.WaitGroup
	errs := make([]string, len(calls))
	for i, cl := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, errOut, code := e.banger(cl.args...)
			if code != 0 {
				errs[i] = fmt.Sprintf("banger %s: exit %d\n%s%s", strings.Join(cl.args, " "), code, out, errOut)
			}
		}()
	}
	wg.Wait()
	for _, msg := range errs {
		if msg != "" {
			t.Fatalf("round %d: %s\ndaemon log:\n%s", s.round, msg, e.daemonLogTail())
		}
	}
	after := names(e.vms())
	for _, cl := range calls {
		v, ok := after[cl.name]
		if (cl.want == "" && ok) || (cl.want != "" && (!ok || v.State != cl.want)) {
			t.Fatalf("round %d: after banger %s: %+v (present %v), want %q", s.round, strings.Join(cl.args, " "), v, ok, cl.want)
		}
	}
	s.c.sampleCalls += len(calls)
}
