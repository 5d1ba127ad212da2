package config

import (
	"fmt"
	"strings"
)

// KeysMarkdown renders the key reference as a markdown table (the content
// of README-keys.md, which a test keeps in step with this package).
func KeysMarkdown() string {
	var b strings.Builder
	b.WriteString("<!-- Generated from internal/config (go test ./internal/config -update); do not edit by hand. -->\n")
	b.WriteString("Keys go in `~/.config/banger/config.toml` (or the file `BANGER_CONFIG` names) as top-level\n")
	b.WriteString("`key = value` lines. Each can be overridden by an environment variable; list values are then\n")
	b.WriteString("comma-separated. `banger config show` prints the effective value of every key and where it came\n")
	b.WriteString("from (`default`, `file`, `env`). Durations are strings with a unit (`\"10s\"`, `\"2h\"`); sizes are\n")
	b.WriteString("strings with a 1024-based unit (`\"8G\"`, `\"512MiB\"`) or a number of bytes. Paths may start with `~/`.\n\n")
	b.WriteString("| key | type | default | environment | meaning |\n")
	b.WriteString("|---|---|---|---|---|\n")
	for _, s := range keySpecs() {
		fmt.Fprintf(&b, "| `%s` | %s | %s | `%s` | %s |\n", s.name, s.kind, s.defDoc, EnvName(s.name), s.doc)
	}
	b.WriteString("\nLegacy names still accepted, with a warning naming the new key (giving both with different values is an error):\n\n")
	b.WriteString("| legacy key | use instead |\n|---|---|\n")
	for _, old := range sortedLegacy() {
		fmt.Fprintf(&b, "| `%s` | `%s` |\n", old, LegacyKeys()[old])
	}
	b.WriteString("\nFile locations follow the XDG base directories and two overrides:\n\n")
	b.WriteString("| what | default | override |\n|---|---|---|\n")
	b.WriteString("| config file | `$XDG_CONFIG_HOME/banger/config.toml`, else `~/.config/banger/config.toml` | `BANGER_CONFIG` |\n")
	b.WriteString("| state (store, VMs, images, log) | `$XDG_STATE_HOME/banger`, else `~/.local/state/banger` | `BANGER_STATE_DIR` |\n")
	b.WriteString("| data (runtime bundle) | `$XDG_DATA_HOME/banger`, else `~/.local/share/banger` | `<BANGER_STATE_DIR>/data` when `BANGER_STATE_DIR` is set |\n")
	b.WriteString("| daemon socket and lock | `$XDG_RUNTIME_DIR/banger`, else `<state>/run` | `XDG_RUNTIME_DIR` |\n")
	return b.String()
}
