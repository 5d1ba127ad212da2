package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"
)

// Load reads the file at p.ConfigFile (a missing file means defaults),
// applies environment overrides BANGER_<KEY> (BANGER_LOG_LEVEL,
// BANGER_FIRECRACKER_BIN, BANGER_IGNORE_PREFLIGHT_ERRORS comma-separated,
// ...), fills the defaults that follow other keys (bundle paths follow
// runtime_dir, bridge_ip follows cidr), then validates. Every error is an
// *Error; a key set in the file is reported with the file and line.
func Load(p Paths, getenv func(string) string) (*Loaded, error) {
	l := &Loaded{Config: Defaults(p), Paths: p, Sources: make(map[string]Source)}
	for _, s := range keySpecs() {
		l.Sources[s.name] = SourceDefault
	}
	st := &loadState{
		l:     l,
		home:  getenv("HOME"),
		file:  p.ConfigFile,
		lines: make(map[string]int),
		env:   make(map[string]string),
	}
	if p.ConfigFile != "" {
		data, err := os.ReadFile(p.ConfigFile)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			var pe *fs.PathError
			if errors.As(err, &pe) {
				err = pe.Err
			}
			return nil, &Error{File: p.ConfigFile, Msg: fmt.Sprintf("reading config file: %v", err)}
		default:
			if e := st.applyFile(data); e != nil {
				return nil, e
			}
		}
	}
	if e := st.applyEnv(getenv); e != nil {
		return nil, e
	}
	st.deriveDefaults()
	if e := st.checkIdle(); e != nil {
		return nil, st.locate(e)
	}
	if e := validate(&l.Config); e != nil {
		return nil, st.locate(e)
	}
	return l, nil
}

type loadState struct {
	l     *Loaded
	home  string
	file  string
	lines map[string]int    // key -> line in the file that set it
	env   map[string]string // key -> environment variable that set it
}

func (st *loadState) explicit(key string) bool {
	return st.l.Sources[key] != SourceDefault
}

// locate adds where a validation error's value came from.
func (st *loadState) locate(e *Error) *Error {
	switch st.l.Sources[e.Key] {
	case SourceFile:
		e.File, e.Line = st.file, st.lines[e.Key]
	case SourceEnv:
		e.Msg += fmt.Sprintf(" (set by %s)", st.env[e.Key])
	}
	return e
}

// lineProbe captures a TOML value. Its UnmarshalTOML fails on purpose: the
// decoder then reports the value's key position in a ParseError, which is
// the only exported way to learn the line a key is on.
type lineProbe struct{ v any }

var errLineProbe = errors.New("line probe")

func (p *lineProbe) UnmarshalTOML(v any) error {
	p.v = v
	return errLineProbe
}

type fileValue struct {
	key  string
	v    any
	line int
}

// fileValues decodes the file into its top-level keys in file order, each
// with its value and line.
func fileValues(data []byte) ([]fileValue, *Error) {
	var top map[string]toml.Primitive
	md, err := toml.Decode(string(data), &top)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, &Error{Line: pe.Position.Line, Msg: "malformed TOML: " + pe.Message + quoteHint(string(data), pe.Position.Line)}
		}
		return nil, &Error{Msg: "malformed TOML: " + err.Error()}
	}
	order := make([]string, 0, len(top))
	seen := make(map[string]bool, len(top))
	for _, k := range md.Keys() {
		if _, ok := top[k[0]]; ok && !seen[k[0]] {
			seen[k[0]] = true
			order = append(order, k[0])
		}
	}
	var rest []string
	for k := range top {
		if !seen[k] {
			rest = append(rest, k)
		}
	}
	sort.Strings(rest)
	order = append(order, rest...)

	text := string(data)
	out := make([]fileValue, 0, len(order))
	for _, k := range order {
		var probe lineProbe
		line := 0
		var pe toml.ParseError
		if err := md.PrimitiveDecode(top[k], &probe); errors.As(err, &pe) {
			// Position.Line is where the value's token ends (the last line
			// of a multi-line string); Start is where it begins, which TOML
			// requires to be on the key's line.
			line = pe.Position.Line
			if s := pe.Position.Start; s > 0 && s <= len(text) {
				line = strings.Count(text[:s], "\n") + 1
			}
		}
		if line <= 0 {
			line = scanKeyLine(text, k)
		}
		out = append(out, fileValue{key: k, v: probe.v, line: line})
	}
	return out, nil
}

// quoteHint suggests quotes when the line of a TOML syntax error assigns an
// unquoted word or address, the most common mistake in a hand-written config.
func quoteHint(text string, line int) string {
	lines := strings.Split(text, "\n")
	if line < 1 || line > len(lines) {
		return ""
	}
	_, val, ok := strings.Cut(lines[line-1], "=")
	if !ok {
		return ""
	}
	val = strings.TrimSpace(val)
	if val == "" || strings.ContainsAny(val[:1], `"'[{`) || strings.HasPrefix(val, "true") || strings.HasPrefix(val, "false") {
		return ""
	}
	first := val[0]
	isLetter := first >= 'a' && first <= 'z' || first >= 'A' && first <= 'Z'
	if isLetter || strings.Count(val, ".") > 1 || strings.Contains(val, ":") || strings.Contains(val, "/") {
		return "; string values need quotes, e.g. log_level = \"debug\""
	}
	return ""
}

// scanKeyLine finds the first line that assigns key or opens a table named
// key; 0 when none does. It is the fallback when the decoder reports no
// position.
func scanKeyLine(text, key string) int {
	forms := []string{key, `"` + key + `"`, `'` + key + `'`}
	for i, line := range strings.Split(text, "\n") {
		l := strings.TrimSpace(line)
		if strings.HasPrefix(l, "[") {
			l = strings.TrimSpace(strings.TrimLeft(l, "["))
		}
		for _, f := range forms {
			if rest, ok := strings.CutPrefix(l, f); ok {
				rest = strings.TrimSpace(rest)
				if strings.HasPrefix(rest, "=") || strings.HasPrefix(rest, ".") || strings.HasPrefix(rest, "]") {
					return i + 1
				}
			}
		}
	}
	return 0
}

func (st *loadState) applyFile(data []byte) *Error {
	values, e := fileValues(data)
	if e != nil {
		e.File = st.file
		return e
	}
	legacy := LegacyKeys()
	type legacyUse struct {
		fileValue
		newKey string
	}
	var legacyUses []legacyUse
	for _, fv := range values {
		if newKey, ok := legacy[fv.key]; ok {
			legacyUses = append(legacyUses, legacyUse{fv, newKey})
			continue
		}
		spec, ok := specFor(fv.key)
		if !ok {
			return &Error{File: st.file, Line: fv.line, Key: fv.key, Msg: unknownKeyMsg(fv.key, fv.v)}
		}
		if err := spec.fromTOML(&st.l.Config, fv.v, st.home); err != nil {
			return &Error{File: st.file, Line: fv.line, Key: fv.key, Msg: err.Error()}
		}
		st.l.Sources[fv.key] = SourceFile
		st.lines[fv.key] = fv.line
	}
	for _, u := range legacyUses {
		spec, _ := specFor(u.newKey)
		// Decode the old value into a scratch config to compare it with the
		// new key's value in the same form.
		var scratch Config
		if err := spec.fromTOML(&scratch, u.v, st.home); err != nil {
			return &Error{File: st.file, Line: u.line, Key: u.key, Msg: err.Error()}
		}
		if st.explicit(u.newKey) {
			if spec.render(&scratch) != spec.render(&st.l.Config) {
				return &Error{File: st.file, Line: u.line, Key: u.key, Msg: fmt.Sprintf(
					"is the old name of %s, which line %d sets to a different value; keep only %s",
					u.newKey, st.lines[u.newKey], u.newKey)}
			}
		} else {
			if err := spec.fromTOML(&st.l.Config, u.v, st.home); err != nil {
				return &Error{File: st.file, Line: u.line, Key: u.key, Msg: err.Error()}
			}
			st.l.Sources[u.newKey] = SourceFile
			st.lines[u.newKey] = u.line
		}
		st.l.Warnings = append(st.l.Warnings, fmt.Sprintf("%s:%d: %s is deprecated; use %s", st.file, u.line, u.key, u.newKey))
	}
	return nil
}

func (st *loadState) applyEnv(getenv func(string) string) *Error {
	for _, spec := range keySpecs() {
		name := EnvName(spec.name)
		v := getenv(name)
		if v == "" {
			continue
		}
		if err := spec.fromString(&st.l.Config, v, st.home); err != nil {
			return &Error{Key: spec.name, Msg: fmt.Sprintf("from %s: %v", name, err)}
		}
		st.l.Sources[spec.name] = SourceEnv
		st.env[spec.name] = name
	}
	for _, oldKey := range sortedLegacy() {
		newKey := LegacyKeys()[oldKey]
		oldName, newName := EnvName(oldKey), EnvName(newKey)
		v := getenv(oldName)
		if v == "" {
			continue
		}
		spec, _ := specFor(newKey)
		if nv := getenv(newName); nv != "" {
			var scratch Config
			if err := spec.fromString(&scratch, v, st.home); err != nil {
				return &Error{Key: oldKey, Msg: fmt.Sprintf("from %s: %v", oldName, err)}
			}
			if spec.render(&scratch) != spec.render(&st.l.Config) {
				return &Error{Key: oldKey, Msg: fmt.Sprintf("%s and %s are both set, to different values; unset %s", oldName, newName, oldName)}
			}
		} else {
			if err := spec.fromString(&st.l.Config, v, st.home); err != nil {
				return &Error{Key: newKey, Msg: fmt.Sprintf("from %s: %v", oldName, err)}
			}
			st.l.Sources[newKey] = SourceEnv
			st.env[newKey] = oldName
		}
		st.l.Warnings = append(st.l.Warnings, fmt.Sprintf("%s is deprecated; use %s", oldName, newName))
	}
	return nil
}

// deriveDefaults recomputes the defaults that follow other keys.
func (st *loadState) deriveDefaults() {
	c := &st.l.Config
	explicit := make(map[string]bool)
	for k := range st.l.Sources {
		explicit[k] = st.explicit(k)
	}
	c.setRuntimeDefaults(explicit)
	if !explicit["bridge_ip"] && c.CIDR.IsValid() && c.CIDR.Addr().Is4() {
		c.BridgeIP = c.CIDR.Masked().Addr().Next()
	}
	// auto_stop_stale_after is the older spelling of idle_action = "stop"
	// with idle_after; show it that way.
	if c.AutoStopStaleAfter > 0 {
		if !explicit["idle_action"] {
			c.IdleAction = IdleStop
		}
		if !explicit["idle_after"] {
			c.IdleAfter = c.AutoStopStaleAfter
		}
	}
}

// checkIdle refuses auto_stop_stale_after next to an idle_action other
// than stop (validate catches a different idle_after).
func (st *loadState) checkIdle() *Error {
	c := &st.l.Config
	if c.AutoStopStaleAfter > 0 && st.explicit("idle_action") && c.IdleAction != IdleStop {
		return keyError("auto_stop_stale_after", "means idle_action = \"stop\", but idle_action is %q; remove auto_stop_stale_after and set idle_after instead", c.IdleAction)
	}
	return nil
}

// unknownKeyMsg explains an unknown key or table and suggests the closest
// known key.
func unknownKeyMsg(key string, v any) string {
	what := "unknown key"
	if _, isTable := v.(map[string]any); isTable {
		what = "unknown table; banger's config has only top-level keys, and none by this name"
	}
	if s := suggest(key); s != "" {
		return fmt.Sprintf("%s; did you mean %s?", what, s)
	}
	return what + "; the valid keys are listed by `banger config show`"
}

// suggest is the known key (or legacy key, given as its new name) closest
// to key, or "" when none is close.
func suggest(key string) string {
	best, bestDist := "", -1
	consider := func(candidate, show string) {
		d := editDistance(strings.ToLower(key), candidate)
		if bestDist < 0 || d < bestDist {
			best, bestDist = show, d
		}
	}
	for _, k := range KnownKeys() {
		consider(k, k)
	}
	legacy := LegacyKeys()
	for _, old := range sortedLegacy() {
		consider(old, fmt.Sprintf("%s (formerly %s)", legacy[old], old))
	}
	limit := max(2, len(key)/3)
	if bestDist < 0 || bestDist > limit {
		return ""
	}
	return best
}

// sortedLegacy lists the legacy key names in order.
func sortedLegacy() []string {
	keys := make([]string, 0, len(LegacyKeys()))
	for k := range LegacyKeys() {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}
