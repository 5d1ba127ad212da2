//go:build !banger_front

package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// runImageBuild runs `image build debian ARGS` through a root that has the
// command, whether or not runtime.go registers it yet.
func runImageBuild(t *testing.T, env map[string]string, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	a := &app{build: BuildInfo{Version: "test"}, stdout: &out, stderr: &errb, getenv: func(k string) string { return env[k] }}
	root := a.rootCmd()
	var build *cobra.Command
	for _, c := range root.Commands() {
		if c.Name() != "image" {
			continue
		}
		for _, sc := range c.Commands() {
			if sc.Name() == "build" {
				build = sc
			}
		}
		if build == nil {
			build = &cobra.Command{Use: "build", Short: "Build an image"}
			c.AddCommand(build)
		}
	}
	if build == nil {
		t.Fatal("no image command")
	}
	if sub, _, err := build.Find([]string{"debian"}); err != nil || sub == build {
		a.addImageBuildDebian(build)
	}
	root.SetArgs(append([]string{"image", "build", "debian"}, args...))
	root.SetOut(&out)
	root.SetErr(&errb)
	code := ExitOK
	if err := root.ExecuteContext(context.Background()); err != nil {
		var msg string
		code, msg = classify(err)
		if msg != "" {
			errb.WriteString("banger: " + msg + "\n")
		}
	}
	return out.String(), errb.String(), code
}

func TestImageBuildDebianBadInput(t *testing.T) {
	env := envWithConfig(t, "")
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"bad size", []string{"--size", "huge"}, ExitUsage, `--size "huge"`},
		{"too small", []string{"--size", "200M"}, ExitUsage, "at least 1G"},
		{"stray argument", []string{"extra"}, ExitUsage, `banger image build debian: takes no arguments, got "extra"`},
		{"no daemon binary", []string{"--name", "d2"}, ExitFailed, "bangerd"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, errOut, code := runImageBuild(t, env, tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.want) {
				t.Fatalf("exit %d stderr %q, want %d with %q", code, errOut, tc.code, tc.want)
			}
		})
	}
}

func TestImageBuildDebianHelp(t *testing.T) {
	out, _, code := runImageBuild(t, envWithConfig(t, ""), "--help")
	if code != ExitOK || !strings.Contains(out, "apt-get install debootstrap") || !strings.Contains(out, "--size") {
		t.Fatalf("exit %d help %q", code, out)
	}
}
