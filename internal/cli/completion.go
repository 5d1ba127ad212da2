package cli

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/client"
)

const completionTimeout = 2 * time.Second

// daemonForCompletion returns a client only when a daemon already answers.
func (a *app) daemonForCompletion(c *cobra.Command) *client.Client {
	l, err := a.config()
	if err != nil {
		return nil
	}
	cl := client.New(l.Paths.Socket)
	ctx, cancel := completionContext(c)
	defer cancel()
	if _, err := cl.Ping(ctx); err != nil {
		return nil
	}
	return cl
}

// completeVMs completes VM names from a running daemon (never starting
// one). many allows several VMs; names already given are left out.
func (a *app) completeVMs(many bool) cobra.CompletionFunc {
	return func(c *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if !many && len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		cl := a.daemonForCompletion(c)
		if cl == nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ctx, cancel := completionContext(c)
		defer cancel()
		var l api.VMList
		if err := cl.Call(ctx, api.MethodVMList, nil, &l); err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []cobra.Completion
		for _, v := range l.VMs {
			if !strings.HasPrefix(v.Name, toComplete) || slices.Contains(args, v.Name) {
				continue
			}
			out = append(out, cobra.CompletionWithDesc(v.Name, describe(v.State, v.IP)))
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

// completeImages completes image names from a running daemon.
func (a *app) completeImages(c *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if c.Name() == "delete" && len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	cl := a.daemonForCompletion(c)
	if cl == nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ctx, cancel := completionContext(c)
	defer cancel()
	var l api.ImageList
	if err := cl.Call(ctx, api.MethodImageList, nil, &l); err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []cobra.Completion
	for _, im := range l.Images {
		if strings.HasPrefix(im.Name, toComplete) {
			out = append(out, im.Name)
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// completionContext bounds a completion's daemon call: completion must stay
// quick and never start a daemon.
func completionContext(c *cobra.Command) (context.Context, context.CancelFunc) {
	ctx := c.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	return context.WithTimeout(ctx, completionTimeout)
}

func describe(parts ...string) string {
	var out []string
	for _, p := range parts {
		if p != "" {
			out = append(out, p)
		}
	}
	return strings.Join(out, ", ")
}
