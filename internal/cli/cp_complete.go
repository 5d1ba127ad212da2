//go:build !banger_front

package cli

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"banger/internal/api"
)

// completeCp completes `vm cp SRC DST`: while no side names a VM yet, VM
// names as "NAME:" prefixes and local paths; once one side is VM:PATH, the
// other is a local path. Guest paths are not completed.
func (a *app) completeCp(c *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(args) >= 2 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	if parseCpSide(toComplete).vm != "" {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	if len(args) == 1 && parseCpSide(args[0]).vm != "" {
		return nil, cobra.ShellCompDirectiveDefault
	}
	var out []cobra.Completion
	if !strings.ContainsAny(toComplete, "/.") {
		if cl := a.daemonForCompletion(c); cl != nil {
			ctx, cancel := completionContext(c)
			var l api.VMList
			if err := cl.Call(ctx, api.MethodVMList, nil, &l); err == nil {
				for _, v := range l.VMs {
					if strings.HasPrefix(v.Name, toComplete) {
						out = append(out, cobra.CompletionWithDesc(v.Name+":", describe(v.State, v.IP)))
					}
				}
			}
			cancel()
		}
	}
	// Shells complete files only when no candidates come back, so local
	// paths are listed here next to the VM prefixes.
	out = append(out, localPathCompletions(toComplete)...)
	return out, cobra.ShellCompDirectiveNoSpace | cobra.ShellCompDirectiveNoFileComp
}

// localPathCompletions lists the entries of toComplete's directory that
// start with its last element (directories with a trailing "/").
func localPathCompletions(toComplete string) []cobra.Completion {
	dir, prefix := filepath.Split(toComplete)
	read := dir
	if read == "" {
		read = "."
	}
	ents, err := os.ReadDir(read)
	if err != nil {
		return nil
	}
	var out []cobra.Completion
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, prefix) || (strings.HasPrefix(name, ".") && !strings.HasPrefix(prefix, ".")) {
			continue
		}
		c := dir + name
		if e.IsDir() || isDir(c) {
			c += "/"
		}
		out = append(out, c)
	}
	return out
}
