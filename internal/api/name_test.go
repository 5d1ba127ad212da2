package api

import (
	"strings"
	"testing"
)

func TestValidName(t *testing.T) {
	for _, tt := range []struct {
		name string
		ok   bool
	}{
		{"dev", true}, {"a", true}, {"web-1", true}, {"0x", true}, {strings.Repeat("a", 63), true},
		{"", false}, {"-dev", false}, {"dev-", false}, {"Dev", false}, {"dev_1", false},
		{"dev.vm", false}, {strings.Repeat("a", 64), false}, {"dév", false},
	} {
		if got := ValidName(tt.name); got != tt.ok {
			t.Errorf("ValidName(%q) = %v, want %v", tt.name, got, tt.ok)
		}
	}
}
