package cli

import (
	"github.com/spf13/cobra"
)

func (a *app) configCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Inspect banger's configuration",
	}
	var jsonOut bool
	show := &cobra.Command{
		Use:   "show",
		Short: "Print the effective configuration and where each value came from",
		Example: `  banger config show
  banger config show --json`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			l, err := a.config()
			if err != nil {
				return err
			}
			entries := l.Entries()
			if jsonOut {
				type entry struct {
					Key    string `json:"key"`
					Value  string `json:"value"`
					Source string `json:"source"`
				}
				out := struct {
					File    string  `json:"file"`
					Entries []entry `json:"entries"`
				}{File: l.Paths.ConfigFile}
				for _, e := range entries {
					out.Entries = append(out.Entries, entry{e.Key, e.Value, string(e.Source)})
				}
				return writeJSON(a.stdout, out)
			}
			t := newTable(a.stdout)
			t.row("KEY", "VALUE", "SOURCE")
			for _, e := range entries {
				v := e.Value
				if v == "" {
					v = `""`
				}
				t.row(e.Key, v, string(e.Source))
			}
			t.flush()
			return nil
		},
	}
	show.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	cmd.AddCommand(show)
	return cmd
}
