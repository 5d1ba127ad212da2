package image

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The guest kernel of the bundle is built by scripts/build-kernel.sh from
// banger's own fragment (scripts/kernel/banger.config) over the kernel's
// defconfig. These tests check the merged .config, not the 20-minute build.

func repoPath(t *testing.T, rel string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "..", rel))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// fragmentWant reads a config fragment: symbol -> the line it must have in
// the final .config ("CONFIG_X=y" or "# CONFIG_X is not set").
func fragmentWant(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "CONFIG_"):
			sym, _, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("%s: malformed line %q", path, line)
			}
			want[sym] = line
		case strings.HasPrefix(line, "# CONFIG_") && strings.HasSuffix(line, " is not set"):
			want[strings.Fields(line)[1]] = line
		case line == "" || strings.HasPrefix(line, "#"):
		default:
			t.Fatalf("%s: line %q is neither an option nor a comment", path, line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return want
}

// configHave reads a .config: symbol -> its line.
func configHave(t *testing.T, path string) map[string]string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]string{}
	for _, line := range strings.Split(string(raw), "\n") {
		switch {
		case strings.HasPrefix(line, "CONFIG_"):
			sym, _, _ := strings.Cut(line, "=")
			have[sym] = line
		case strings.HasPrefix(line, "# CONFIG_") && strings.HasSuffix(line, " is not set"):
			have[strings.Fields(line)[1]] = line
		}
	}
	return have
}

// checkMerged fails the test for every fragment option whose line is not in
// the merged config.
func checkMerged(t *testing.T, fragment, config string) {
	t.Helper()
	have := configHave(t, config)
	want := fragmentWant(t, fragment)
	for sym, w := range want {
		got, ok := have[sym]
		if strings.HasPrefix(w, "# ") {
			if ok && !strings.HasSuffix(got, " is not set") {
				t.Errorf("%s: fragment says %q, merged config has %q", sym, w, got)
			}
			continue
		}
		if got != w {
			t.Errorf("%s: fragment says %q, merged config has %q", sym, w, got)
		}
	}
}

func runBuildKernel(t *testing.T, env []string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := exec.Command("bash", append([]string{repoPath(t, "scripts/build-kernel.sh")}, args...)...)
	cmd.Dir = repoPath(t, ".")
	cmd.Env = append(os.Environ(), env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// TestKernelFragmentLists checks the fragments themselves: only options and
// comments, and banger.config has what banger's guests cannot do without.
func TestKernelFragmentLists(t *testing.T) {
	want := fragmentWant(t, repoPath(t, "scripts/kernel/banger.config"))
	for _, sym := range []string{
		"CONFIG_VIRTIO_MMIO", "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES", "CONFIG_VIRTIO_BLK", "CONFIG_VIRTIO_NET",
		"CONFIG_VSOCKETS", "CONFIG_VIRTIO_VSOCKETS", "CONFIG_EXT4_FS", "CONFIG_IP_PNP", "CONFIG_SERIAL_8250_CONSOLE",
		"CONFIG_DEVTMPFS_MOUNT", "CONFIG_CGROUPS", "CONFIG_UNIX", "CONFIG_INET", "CONFIG_TMPFS",
		"CONFIG_SERIO_I8042", "CONFIG_KEYBOARD_ATKBD", "CONFIG_KVM_GUEST", "CONFIG_PVH",
	} {
		if want[sym] != sym+"=y" {
			t.Errorf("banger.config: %s is %q, want %s=y", sym, want[sym], sym)
		}
	}
	pvm := fragmentWant(t, repoPath(t, "scripts/kernel/pvm-guest.config"))
	if pvm["CONFIG_PVM_GUEST"] != "CONFIG_PVM_GUEST=y" || pvm["CONFIG_X86_PIE"] != "CONFIG_X86_PIE=y" {
		t.Errorf("pvm-guest.config = %v", pvm)
	}
}

// fakeKernelTree is a stand-in kernel source tree for the script's own
// logic: defconfig writes a small .config, the fake merge_config.sh applies
// fragments line by line, and olddefconfig drops CONFIG_DROPPED_BY_KCONFIG
// the way Kconfig drops an option whose dependency is off.
func fakeKernelTree(t *testing.T) string {
	t.Helper()
	tree := filepath.Join(t.TempDir(), "linux")
	files := map[string]string{
		"Makefile": "defconfig:\n\t@printf 'CONFIG_64BIT=y\\n# CONFIG_VSOCKETS is not set\\n' > $(O)/.config\n" +
			"olddefconfig:\n\t@sed -i '/^CONFIG_DROPPED_BY_KCONFIG=/d' $(O)/.config\n" +
			"kernelversion:\n\t@echo 6.1.0-fake\n",
		"scripts/kconfig/merge_config.sh": "#!/bin/sh\n# fake: merge_config.sh -m -O DIR BASE FRAGMENT...\nout=$3/.config; shift 4\n" +
			"for f in \"$@\"; do grep -E '^(CONFIG_|# CONFIG_)' \"$f\" | while read -r l; do\n" +
			"  s=$(printf '%s\\n' \"$l\" | sed -E 's/^# //; s/[= ].*//')\n" +
			"  grep -vE \"^$s=|^# $s is not set\" \"$out\" > \"$out.new\" || true; mv \"$out.new\" \"$out\"; printf '%s\\n' \"$l\" >> \"$out\"\n" +
			"done; done\n",
	}
	for name, body := range files {
		p := filepath.Join(tree, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return tree
}

// stubTools puts do-nothing gcc, bison and flex first on PATH: the config
// step of the fake tree compiles nothing, but the script checks for them.
func stubTools(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, tool := range []string{"gcc", "bison", "flex"} {
		if err := os.WriteFile(filepath.Join(dir, tool), []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return "PATH=" + dir + ":" + os.Getenv("PATH")
}

// TestBuildKernelScriptMerge runs scripts/build-kernel.sh --config-only on
// the fake tree: the merged config holds every fragment line, an extra
// fragment (--fragment or KERNEL_FRAGMENTS) is merged after banger.config,
// and an option Kconfig drops fails the run, naming it.
func TestBuildKernelScriptMerge(t *testing.T) {
	for _, tool := range []string{"make", "awk", "sed", "sha256sum"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s", tool)
		}
	}
	tree := fakeKernelTree(t)
	cache := t.TempDir()
	env := []string{stubTools(t), "BANGER_KERNEL_CACHE=" + cache, "KERNEL_FRAGMENTS=", "KERNEL_SRC="}

	out, errOut, err := runBuildKernel(t, env, "--config-only", "--source", tree)
	if err != nil {
		t.Fatalf("config-only: %v\n%s", err, errOut)
	}
	config := strings.TrimSpace(out)
	if filepath.Dir(filepath.Dir(config)) != cache || filepath.Base(config) != "config" {
		t.Fatalf("printed %q, want <cache>/<hash>/config", config)
	}
	checkMerged(t, repoPath(t, "scripts/kernel/banger.config"), config)
	if _, err := os.Stat(filepath.Join(tree, ".config")); !os.IsNotExist(err) {
		t.Fatalf("the source tree was written to: %v", err)
	}

	extra := filepath.Join(t.TempDir(), "extra.config")
	os.WriteFile(extra, []byte("# a later fragment wins\n# CONFIG_SECCOMP is not set\nCONFIG_EXTRA_OPTION=y\n"), 0o644)
	for _, how := range [][]string{{"--fragment", extra}, {"env"}} {
		e, args := env, []string{"--config-only", "--source", tree}
		if how[0] == "env" {
			e = append(append([]string{}, env...), "KERNEL_FRAGMENTS="+extra)
		} else {
			args = append(args, how...)
		}
		out, errOut, err := runBuildKernel(t, e, args...)
		if err != nil {
			t.Fatalf("%v: %v\n%s", how, err, errOut)
		}
		got := strings.TrimSpace(out)
		if got == config {
			t.Fatalf("%v: an extra fragment did not change the cache key", how)
		}
		checkMerged(t, extra, got)
		if have := configHave(t, got); have["CONFIG_VIRTIO_VSOCKETS"] != "CONFIG_VIRTIO_VSOCKETS=y" {
			t.Fatalf("%v: banger.config not merged under the extra fragment: %q", how, have["CONFIG_VIRTIO_VSOCKETS"])
		}
	}

	dropped := filepath.Join(t.TempDir(), "dropped.config")
	os.WriteFile(dropped, []byte("CONFIG_DROPPED_BY_KCONFIG=y\n"), 0o644)
	_, errOut, err = runBuildKernel(t, env, "--config-only", "--source", tree, "--fragment", dropped)
	if err == nil || !strings.Contains(errOut, "did not survive") || !strings.Contains(errOut, "CONFIG_DROPPED_BY_KCONFIG=y (from "+dropped) {
		t.Fatalf("a dropped option: err %v, stderr:\n%s", err, errOut)
	}

	if _, errOut, err := runBuildKernel(t, env, "--config-only", "--source", tree, "--fragment", "/nonexistent.config"); err == nil || !strings.Contains(errOut, "fragment /nonexistent.config not found") {
		t.Fatalf("missing fragment: %v %s", err, errOut)
	}

	// A tarball of the tree is extracted into the work directory.
	if _, err := exec.LookPath("tar"); err == nil {
		tgz := filepath.Join(t.TempDir(), "linux.tar.gz")
		if out, err := exec.Command("tar", "-C", filepath.Dir(tree), "-czf", tgz, filepath.Base(tree)).CombinedOutput(); err != nil {
			t.Fatalf("tar: %v\n%s", err, out)
		}
		out, errOut, err := runBuildKernel(t, env, "--config-only", "--source", tgz)
		if err != nil {
			t.Fatalf("tarball source: %v\n%s", err, errOut)
		}
		checkMerged(t, repoPath(t, "scripts/kernel/banger.config"), strings.TrimSpace(out))
		if leftovers, _ := filepath.Glob(filepath.Join(cache, "build.*")); len(leftovers) != 0 {
			t.Fatalf("work directories left in the cache: %v", leftovers)
		}
	}
}

// TestKernelConfigMerge merges banger's fragment over the real defconfig of
// Debian's linux-source-6.1 (what `make kernel` does before compiling) and
// checks every fragment option in the result, then shows that the PVM
// fragment cannot be satisfied by that tree (it needs a PVM-patched one).
// The tree is extracted once and used read-only for both runs (the script
// builds out of tree); the script's own extraction is covered by
// TestBuildKernelScriptMerge.
func TestKernelConfigMerge(t *testing.T) {
	const tarball = "/usr/src/linux-source-6.1.tar.xz"
	if testing.Short() {
		t.Skip("extracts a kernel tree (about 15 s); skipped with -short")
	}
	if _, err := os.Stat(tarball); err != nil {
		t.Skipf("needs Debian's kernel source %s (apt-get install linux-source-6.1; CI installs it)", tarball)
	}
	for _, tool := range []string{"make", "gcc", "bison", "flex", "tar", "xz"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (apt-get install build-essential bison flex xz-utils; CI installs them)", tool)
		}
	}
	start := time.Now()
	src := t.TempDir()
	if out, err := exec.Command("tar", "-C", src, "-xf", tarball).CombinedOutput(); err != nil {
		t.Fatalf("extracting %s: %v\n%s", tarball, err, out)
	}
	tree := filepath.Join(src, "linux-source-6.1")
	t.Logf("extract: %s", time.Since(start).Round(time.Second))

	env := []string{"BANGER_KERNEL_CACHE=" + t.TempDir(), "KERNEL_FRAGMENTS=", "KERNEL_SRC="}
	start = time.Now()
	out, errOut, err := runBuildKernel(t, env, "--config-only", "--source", tree)
	if err != nil {
		t.Fatalf("build-kernel.sh --config-only: %v\n%s", err, errOut)
	}
	t.Logf("defconfig + merge + olddefconfig: %s", time.Since(start).Round(time.Second))
	checkMerged(t, repoPath(t, "scripts/kernel/banger.config"), strings.TrimSpace(out))

	_, errOut, err = runBuildKernel(t, env, "--config-only", "--source", tree, "--fragment", repoPath(t, "scripts/kernel/pvm-guest.config"))
	if err == nil || !strings.Contains(errOut, "CONFIG_PVM_GUEST=y") || !strings.Contains(errOut, "CONFIG_X86_PIE=y") {
		t.Fatalf("the PVM fragment on a stock 6.1 tree: err %v\n%s", err, errOut)
	}
	if _, err := os.Stat(filepath.Join(tree, ".config")); !os.IsNotExist(err) {
		t.Fatalf("the source tree was written to: %v", err)
	}
}

// TestSetupScriptsCheck runs bash -n and shellcheck on the scripts a new
// user runs first (setup, the test tiers, CI); build-kernel.sh is checked
// with the image scripts.
func TestSetupScriptsCheck(t *testing.T) {
	for _, s := range []string{"scripts/setup.sh", "scripts/test.sh", ".ci/run"} {
		p := repoPath(t, s)
		t.Run(s, func(t *testing.T) {
			if out, err := exec.Command("bash", "-n", p).CombinedOutput(); err != nil {
				t.Fatalf("bash -n %s: %v\n%s", s, err, out)
			}
			if _, err := exec.LookPath("shellcheck"); err != nil {
				t.Skip("shellcheck not installed (apt-get install shellcheck); bash -n passed")
			}
			if out, err := exec.Command("shellcheck", "-x", p).CombinedOutput(); err != nil {
				t.Errorf("shellcheck %s: %v\n%s", s, err, out)
			}
		})
	}
}
