package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/client"
	"banger/internal/config"
	"banger/internal/hostops"
	"banger/internal/image"
)

// fakeImageHost adds the image build ops to fakeHost: staging directories
// it tracks, an mkfs that writes a sparse file, and one op that can fail.
type fakeImageHost struct {
	*fakeHost
	mu      sync.Mutex
	failAt  string
	n       int
	staging map[string]bool
}

func (f *fakeImageHost) ImageDebootstrap(_ context.Context, a hostops.DebootstrapArgs) (hostops.DebootstrapResult, error) {
	if f.failAt == "debootstrap" { // as the seam reports hostops.ErrNoDebootstrap, in either mode
		return hostops.DebootstrapResult{}, &hostops.Error{Op: "image-debootstrap", Kind: hostops.KindNotFound, Message: hostops.ErrNoDebootstrap.Error()}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	s := fmt.Sprintf("/var/tmp/banger-build-%016x", f.n)
	f.staging[s] = true
	return hostops.DebootstrapResult{Staging: s, Mirror: "http://mirror.test/debian"}, nil
}

func (f *fakeImageHost) ImageCustomize(_ context.Context, a hostops.CustomizeArgs) (hostops.CustomizeResult, error) {
	if f.failAt == "customize" {
		return hostops.CustomizeResult{}, errors.New("customizing the image (images/debian/customize.sh): exit status 100\nE: Unable to locate package nope")
	}
	if _, err := os.Stat(a.AgentPath); err != nil {
		return hostops.CustomizeResult{}, err
	}
	return hostops.CustomizeResult{PackagesHash: "feedface"}, nil
}

func (f *fakeImageHost) ImageMkfs(_ context.Context, a hostops.MkfsArgs) error {
	fh, err := os.OpenFile(a.Out, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer fh.Close()
	return fh.Truncate(a.SizeBytes)
}

func (f *fakeImageHost) ImageRemoveStaging(_ context.Context, s string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.staging, s)
	return nil
}

func startImageDaemon(t *testing.T, host *fakeImageHost) (*client.Client, config.Paths, config.Config) {
	t.Helper()
	repo, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(image.ScriptsEnv, filepath.Join(repo, "images"))
	getenv := testEnv(t)
	paths, err := config.DefaultPaths(getenv)
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := config.Load(paths, getenv)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(loaded.Config.VsockAgentPath), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(loaded.Config.VsockAgentPath, []byte("agent"), 0o755); err != nil {
		t.Fatal(err)
	}
	td := runTestDaemon(t, loaded, host)
	return td.cl, paths, loaded.Config
}

func TestImageBuildRPC(t *testing.T) {
	if !image.HaveDebootstrap() {
		t.Skip("debootstrap not installed: image.build refuses before building (apt-get install debootstrap)")
	}
	host := &fakeImageHost{fakeHost: newFakeHost(), staging: map[string]bool{}}
	cl, paths, cfg := startImageDaemon(t, host)
	ctx := context.Background()

	evctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events, _, err := cl.Events(evctx)
	if err != nil {
		t.Fatal(err)
	}
	var res api.ImageBuildResult
	if err := cl.Call(ctx, api.MethodImageBuild, api.ImageBuildParams{Distro: api.DistroDebian, Size: "2G"}, &res); err != nil {
		t.Fatal(err)
	}
	if res.Image.Name != "debian" || res.Image.PackagesHash != "feedface" || res.Image.SizeBytes != 2<<30 {
		t.Errorf("image = %+v", res.Image)
	}
	if !strings.HasPrefix(res.Image.RootfsPath, paths.ImagesDir+"/") {
		t.Errorf("rootfs %s is not in the state dir", res.Image.RootfsPath)
	}
	if len(res.Stages) != 4 {
		t.Errorf("stages = %+v", res.Stages)
	}
	if len(host.staging) != 0 {
		t.Errorf("staging left: %v", host.staging)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(res.Image.RootfsPath), "build")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("build inputs left beside the image: %v", err)
	}
	if _, err := os.Stat(cfg.SSHKeyPath + ".pub"); err != nil {
		t.Errorf("bundle key not generated: %v", err)
	}
	var l api.ImageList
	if err := cl.Call(ctx, api.MethodImageList, nil, &l); err != nil || len(l.Images) != 1 || l.Images[0].PackagesHash != "feedface" {
		t.Fatalf("image list = %+v, %v", l, err)
	}
	seen := map[string]bool{}
	timeout := time.After(5 * time.Second)
	for !seen[image.StageMkfs] {
		select {
		case ev := <-events:
			if ev.Kind == api.EventImage && strings.HasPrefix(ev.Message, "debian: ") {
				seen[ev.Stage] = true
			}
		case <-timeout:
			t.Fatalf("progress events seen: %v", seen)
		}
	}

	// the same name again, bad input, a failing build
	for _, tc := range []struct {
		name   string
		p      api.ImageBuildParams
		failAt string
		kind   string
		want   string
	}{
		{"name taken", api.ImageBuildParams{Distro: "debian"}, "", api.KindConflict, "already exists"},
		{"unknown distro", api.ImageBuildParams{Distro: "arch", Name: "x"}, "", api.KindInvalid, "unknown distribution"},
		{"bad name", api.ImageBuildParams{Distro: "debian", Name: "Bad_Name"}, "", api.KindInvalid, "image name"},
		{"bad size", api.ImageBuildParams{Distro: "debian", Name: "x", Size: "lots"}, "", api.KindInvalid, "image size"},
		{"too small", api.ImageBuildParams{Distro: "debian", Name: "x", Size: "100M"}, "", api.KindInvalid, "too small"},
		{"customize fails", api.ImageBuildParams{Distro: "debian", Name: "broken"}, "customize", api.KindInternal, "Unable to locate package"},
		{"helper has no debootstrap", api.ImageBuildParams{Distro: "debian", Name: "nodeb"}, "debootstrap", api.KindUnavailable, "apt-get install debootstrap"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			host.failAt = tc.failAt
			defer func() { host.failAt = "" }()
			err := cl.Call(ctx, api.MethodImageBuild, tc.p, nil)
			var re *api.Error
			if !errors.As(err, &re) || re.Data.Kind != tc.kind || !strings.Contains(re.Message, tc.want) {
				t.Fatalf("err = %v, want kind %s with %q", err, tc.kind, tc.want)
			}
		})
	}
	if err := cl.Call(ctx, api.MethodImageList, nil, &l); err != nil || len(l.Images) != 1 {
		t.Fatalf("failed builds left images: %+v, %v", l, err)
	}
	dirs, err := os.ReadDir(paths.ImagesDir)
	if err != nil || len(dirs) != 1 {
		t.Errorf("image dirs after failures: %v, %v", dirs, err)
	}
	if len(host.staging) != 0 {
		t.Errorf("staging left after a failed build: %v", host.staging)
	}
}

func TestImageBuildAgent(t *testing.T) {
	dir := t.TempDir()
	bundled := filepath.Join(dir, "runtime", "banger-agent")
	exe := filepath.Join(dir, "bin", "bangerd")
	beside := filepath.Join(dir, "bin", "banger-agent")
	os.MkdirAll(filepath.Dir(exe), 0o755)
	os.WriteFile(exe, []byte("daemon"), 0o755)

	if _, err := imageBuildAgent(bundled, exe); err == nil || !strings.Contains(err.Error(), "banger runtime install") || !strings.Contains(err.Error(), beside) {
		t.Fatalf("no agent anywhere: %v", err)
	}
	os.WriteFile(beside, []byte("agent"), 0o755)
	if got, err := imageBuildAgent(bundled, exe); err != nil || got != beside {
		t.Fatalf("without a bundle: %q, %v; want the agent next to the daemon", got, err)
	}
	os.MkdirAll(filepath.Dir(bundled), 0o755)
	os.WriteFile(bundled, []byte("agent"), 0o755)
	if got, err := imageBuildAgent(bundled, exe); err != nil || got != bundled {
		t.Fatalf("with a bundle: %q, %v; want the bundle's agent", got, err)
	}
}
