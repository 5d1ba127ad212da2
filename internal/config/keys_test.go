package config

import (
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite README-keys.md from the key reference")

func TestEntries(t *testing.T) {
	p := setup(t, ptr("default_vcpu = 3\ndefault_work_disk_size = \"1536M\"\n"))
	l, err := Load(p, envMap(map[string]string{"BANGER_IGNORE_PREFLIGHT_ERRORS": "kvm,tun"}))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	entries := l.Entries()
	specs := keySpecs()
	if len(entries) != len(specs) {
		t.Fatalf("Entries has %d entries, want %d", len(entries), len(specs))
	}
	byKey := make(map[string]Entry)
	for i, e := range entries {
		if e.Key != specs[i].name {
			t.Errorf("entry %d is %s, want %s (stable order)", i, e.Key, specs[i].name)
		}
		if e.Env != EnvName(e.Key) {
			t.Errorf("entry %s Env = %q", e.Key, e.Env)
		}
		byKey[e.Key] = e
	}
	want := map[string]Entry{
		"default_vcpu":            {Value: "3", Source: SourceFile},
		"default_work_disk_size":  {Value: "1.5 GiB", Source: SourceFile},
		"default_disk_size":       {Value: "8 GiB", Source: SourceDefault},
		"ignore_preflight_errors": {Value: "kvm,tun", Source: SourceEnv},
		"stop_grace":              {Value: "10s", Source: SourceDefault},
		"auto_stop_stale_after":   {Value: "0s", Source: SourceDefault},
		"cidr":                    {Value: "172.16.0.0/24", Source: SourceDefault},
		"bridge_ip":               {Value: "172.16.0.1", Source: SourceDefault},
		"dns_listen_addr":         {Value: "127.0.0.1:42069", Source: SourceDefault},
		"initrd_path":             {Value: "", Source: SourceDefault},
		"firecracker_bin":         {Value: filepath.Join(p.DataDir, "runtime", "firecracker"), Source: SourceDefault},
	}
	for k, w := range want {
		got := byKey[k]
		if got.Value != w.Value || got.Source != w.Source {
			t.Errorf("entry %s = %q (%s), want %q (%s)", k, got.Value, got.Source, w.Value, w.Source)
		}
	}
}

// TestKeyReference checks that the key table covers every Config field
// exactly once, with a distinct key, and that each key's rendered default
// parses back to the same value.
func TestKeyReference(t *testing.T) {
	specs := keySpecs()
	if n := reflect.TypeOf(Config{}).NumField(); len(specs) != n {
		t.Fatalf("%d keys for %d Config fields", len(specs), n)
	}
	var c Config
	seenField := make(map[any]string)
	for _, s := range specs {
		f := s.field(&c)
		if prev, ok := seenField[f]; ok {
			t.Errorf("keys %s and %s share a field", prev, s.name)
		}
		seenField[f] = s.name
	}
	keys := KnownKeys()
	if !slices.IsSorted(keys) || len(slices.Compact(slices.Clone(keys))) != len(keys) {
		t.Errorf("KnownKeys not sorted and unique: %q", keys)
	}
	for old, newKey := range LegacyKeys() {
		if slices.Contains(keys, old) || !slices.Contains(keys, newKey) {
			t.Errorf("legacy %s -> %s is inconsistent with KnownKeys", old, newKey)
		}
	}
	def := Defaults(testPaths(t))
	for _, s := range specs {
		var back Config
		rendered := s.render(&def)
		if err := s.fromString(&back, rendered, ""); err != nil {
			t.Errorf("%s: rendered default %q does not parse: %v", s.name, rendered, err)
			continue
		}
		if got := s.render(&back); got != rendered {
			t.Errorf("%s: %q renders back as %q", s.name, rendered, got)
		}
		// The example in messages is valid for the key.
		var ex Config
		if err := s.fromTOML(&ex, exampleValue(t, s), "/home/u"); err != nil {
			t.Errorf("%s: example %s is rejected: %v", s.name, s.example, err)
		}
	}
}

// exampleValue decodes a key's example as TOML.
func exampleValue(t *testing.T, s keySpec) any {
	t.Helper()
	vals, e := fileValues([]byte(s.name + " = " + s.example + "\n"))
	if e != nil || len(vals) != 1 {
		t.Fatalf("%s: example %s is not TOML: %v", s.name, s.example, e)
	}
	return vals[0].v
}

func TestSuggest(t *testing.T) {
	tests := map[string]string{
		"log_levl":               "log_level",
		"LOG_LEVEL":              "log_level",
		"cidrr":                  "cidr",
		"bridgeip":               "bridge_ip",
		"default_memory":         "default_memory_mib",
		"stop_grace_period":      "",
		"vsock_ping_helper_pth":  "vsock_agent_path (formerly vsock_ping_helper_path)",
		"vsock_agent_pth":        "vsock_agent_path",
		"ignore_preflight_error": "ignore_preflight_errors",
		"xyz":                    "",
	}
	for in, want := range tests {
		if got := suggest(in); got != want {
			t.Errorf("suggest(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestScanKeyLine(t *testing.T) {
	text := "# log_level = 1\n\n  log_level= \"x\"\n'cidr' = \"y\"\n[ network ]\nbridge.name = 1\nkernel_pathx = 2\n"
	tests := map[string]int{"log_level": 3, "cidr": 4, "network": 5, "bridge": 6, "kernel_path": 0, "absent": 0}
	for key, want := range tests {
		if got := scanKeyLine(text, key); got != want {
			t.Errorf("scanKeyLine(%q) = %d, want %d", key, got, want)
		}
	}
}

func TestEditDistance(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"a", "", 1}, {"", "abc", 3}, {"kitten", "sitting", 3}, {"cidr", "cidr", 0}, {"log_levl", "log_level", 1},
	}
	for _, tt := range tests {
		if got := editDistance(tt.a, tt.b); got != tt.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

// TestReadmeKeys keeps README-keys.md in step with the key table; run with
// -update to rewrite it.
func TestReadmeKeys(t *testing.T) {
	got := KeysMarkdown()
	const path = "README-keys.md"
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading %s (run go test -update to create it): %v", path, err)
	}
	if string(want) != got {
		t.Errorf("%s is out of date; run go test ./internal/config -update", path)
	}
	for _, k := range KnownKeys() {
		if !strings.Contains(got, "| `"+k+"` |") || !strings.Contains(got, "`"+EnvName(k)+"`") {
			t.Errorf("key reference lacks %s or its environment variable", k)
		}
	}
}
