package config

import (
	"strings"
	"testing"
)

// TestAutoForwardKey: auto_forward defaults to true, takes a TOML boolean
// from the file and true/false/1/0 from the environment, and refuses
// anything else with a line naming what to write.
func TestAutoForwardKey(t *testing.T) {
	s, ok := specFor("auto_forward")
	if !ok {
		t.Fatal("auto_forward is not a key")
	}
	if !Defaults(testPaths(t)).AutoForward {
		t.Error("auto_forward defaults to false, want true")
	}
	for in, want := range map[string]bool{"true": true, "false": false, " 0 ": false, "1": true} {
		c := Config{AutoForward: !want}
		if err := s.fromString(&c, in, ""); err != nil || c.AutoForward != want {
			t.Errorf("fromString(%q) = %v, %v; want %v", in, c.AutoForward, err, want)
		}
	}
	var c Config
	if err := s.fromString(&c, "maybe", ""); err == nil || !strings.Contains(err.Error(), "use true or false") {
		t.Errorf("fromString(maybe) = %v, want a refusal saying true or false", err)
	}
	if got := s.render(&Config{AutoForward: true}); got != "true" {
		t.Errorf("render = %q", got)
	}
}
