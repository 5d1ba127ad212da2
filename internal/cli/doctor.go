//go:build !banger_front

package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/client"
	"banger/internal/config"
	"banger/internal/hostops"
	"banger/internal/preflight"
)

func (a *app) addDoctorCommand(root *cobra.Command) {
	if !a.wants("doctor") {
		return
	}
	var jsonOut bool
	var ignore []string
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check that this host can run banger VMs, with a fix for each problem",
		Example: `  banger doctor
  banger doctor --json
  banger doctor --ignore-preflight-errors kvm,vhost_vsock`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			l, err := a.config()
			if err != nil {
				return err
			}
			if err := config.CheckPreflightNames(ignore); err != nil {
				return usageErrorf("--ignore-preflight-errors: %v", err)
			}
			cfg := l.Config
			cfg.IgnorePreflightErrors = append(append([]string{}, cfg.IgnorePreflightErrors...), ignore...)
			ctx, cancel := context.WithTimeout(c.Context(), time.Second)
			st, perr := client.New(l.Paths.Socket).Ping(ctx)
			cancel()
			var daemon *api.DaemonStatus
			if perr == nil {
				daemon = &st
			}
			host := hostops.New(hostops.Options{Roots: []string{l.Paths.StateDir, l.Paths.DataDir}, HelperPath: cfg.HelperPath})
			fp := func(bridge string) (bool, string, string, error) {
				r, err := host.ForwardPolicy(c.Context(), bridge)
				return r.OK, r.Detail, r.Fix, err
			}
			env := preflight.Env{Config: cfg, Paths: l.Paths, Daemon: daemon, ForwardPolicy: fp}
			rs := preflight.Run(c.Context(), env)
			failed := false
			for _, r := range rs {
				if r.Status == preflight.Fail {
					failed = true
				}
			}
			if jsonOut {
				if err := writeJSON(a.stdout, struct {
					OK     bool               `json:"ok"`
					Checks []preflight.Result `json:"checks"`
				}{!failed, rs}); err != nil {
					return err
				}
			} else {
				for _, r := range rs {
					fmt.Fprintf(a.stdout, "%-4s  %-14s %s\n", strings.ToUpper(r.Status), r.Name, r.Detail)
					if r.Fix != "" && r.Status != preflight.Pass {
						fmt.Fprintf(a.stdout, "      %-14s fix: %s\n", "", r.Fix)
					}
				}
			}
			if failed {
				if !jsonOut {
					fmt.Fprintf(a.stderr, "banger: %s\n", preflight.IgnoreHint(rs))
				}
				return &silentExit{code: ExitFailed}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	cmd.Flags().StringSliceVar(&ignore, "ignore-preflight-errors", nil, "check names whose failures only warn (e.g. kvm,vhost_vsock; all)")
	root.AddCommand(cmd)
}
