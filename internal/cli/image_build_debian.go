//go:build !banger_front

package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/client"
	"banger/internal/config"
)

// addImageBuildDebian adds `image build debian` under the `image build`
// command.
func (a *app) addImageBuildDebian(build *cobra.Command) {
	var (
		name, size     string
		jsonOut, quiet bool
	)
	cmd := &cobra.Command{
		Use:   "debian",
		Short: "Build the default Debian image (debootstrap bookworm, images/debian/customize.sh, mkfs.ext4)",
		Long: "Build the default Debian bookworm image through the daemon: debootstrap from the host's Debian mirror,\n" +
			"images/debian/customize.sh inside the tree (packages of images/packages.apt, key-only sshd with the\n" +
			"runtime bundle's key, the agent), then mkfs.ext4 -d. Needs debootstrap (`sudo apt-get install debootstrap`)\n" +
			"and root or the helper (`sudo make install-helper`). Takes a few minutes; stages print as they finish.",
		Example: "  banger image build debian\n  banger image build debian --name debian-big --size 8G",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if size != "" {
				n, err := config.ParseSize(size)
				if err != nil {
					return usageErrorf("--size %q: %v (use e.g. 4G)", size, err)
				}
				if n < 1<<30 {
					return usageErrorf("--size %s is too small for the Debian image; use at least 1G", size)
				}
			}
			cl, err := a.client(c.Context())
			if err != nil {
				return err
			}
			p := api.ImageBuildParams{Distro: api.DistroDebian, Name: name, Size: size}
			stop := a.imageProgress(c.Context(), cl, quiet || jsonOut, name)
			var res api.ImageBuildResult
			err = cl.Call(c.Context(), api.MethodImageBuild, p, &res)
			stop()
			if err != nil {
				var re *api.Error
				if errors.As(err, &re) && strings.Contains(strings.TrimSpace(re.Message), "\n") {
					// a failed build carries the tail of the tool's output
					fmt.Fprintf(a.stderr, "banger: %s\n", strings.TrimSpace(re.Message))
					return &silentExit{code: ExitFailed}
				}
				return err
			}
			if jsonOut {
				return writeJSON(a.stdout, res)
			}
			fmt.Fprintf(a.stdout, "built image %s (%s, %s) in %s\n", res.Image.Name, res.Image.ID,
				config.FormatSize(res.Image.SizeBytes), (time.Duration(res.ElapsedS * float64(time.Second))).Round(time.Second))
			for _, s := range res.Stages {
				fmt.Fprintf(a.stdout, "  %-12s %7.1fs\n", s.Stage, s.ElapsedS)
			}
			fmt.Fprintf(a.stdout, "  rootfs       %s\n  packages     sha256 %s\n", res.Image.RootfsPath, res.Image.PackagesHash)
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "debian", "name of the new image")
	cmd.Flags().StringVar(&size, "size", "4G", "size of the image's ext4 filesystem")
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print the result as JSON")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "do not print progress")
	build.AddCommand(cmd)
}

// imageProgress prints image build stages from the event stream until the
// returned stop is called.
func (a *app) imageProgress(ctx context.Context, cl *client.Client, quiet bool, name string) func() {
	if quiet {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	ch, _, err := cl.Events(ctx)
	if err != nil {
		cancel()
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		prefix := name + ": "
		for ev := range ch {
			if ev.Kind != api.EventImage || !strings.HasPrefix(ev.Message, prefix) {
				continue
			}
			fmt.Fprintf(a.stderr, "  %-12s %7.1fs  %s\n", ev.Stage, ev.Elapsed, strings.TrimPrefix(ev.Message, prefix))
		}
	}()
	return func() {
		cancel()
		<-done
	}
}
