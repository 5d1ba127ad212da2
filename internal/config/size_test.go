package config

import (
	"math"
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
	}{
		{"8G", 8 * GiB},
		{"8GiB", 8 * GiB},
		{"8gib", 8 * GiB},
		{"8 GiB", 8 * GiB},
		{" 8g ", 8 * GiB},
		{"512M", 512 * MiB},
		{"512MiB", 512 * MiB},
		{"1T", TiB},
		{"1TiB", TiB},
		{"2P", 2 * PiB},
		{"4K", 4096},
		{"4KiB", 4096},
		{"1048576", 1048576},
		{"1048576B", 1048576},
		{"1 B", 1},
		{"+1G", GiB},
		{"1.5G", GiB + GiB/2},
		{"1.5 GiB", GiB + GiB/2},
		{"0.5K", 512},
		{"1.25M", MiB + MiB/4},
		{"8191P", 8191 * PiB},
		{"7E", 7 * EiB},
		{"7.5EiB", 7*EiB + EiB/2},
		{"9223372036854775807", math.MaxInt64},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSize(tt.in)
			if err != nil {
				t.Fatalf("ParseSize(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("ParseSize(%q) = %d, want %d", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseSizeErrors(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"", "empty size"},
		{"   ", "empty size"},
		{"-1G", "negative"},
		{"-5", "negative"},
		{"0", "zero"},
		{"0G", "zero"},
		{"0.0M", "zero"},
		{"G", "does not start with a number"},
		{"abc", "does not start with a number"},
		{"8X", `unknown unit "X"`},
		{"8Gi", `unknown unit "Gi"`},
		{"8GB", "ambiguous"},
		{"8 mb", "ambiguous"},
		{"1e3", "unknown unit"},
		{"0x10", "unknown unit"},
		{"1..5G", "not a number"},
		{"1.5.2G", "not a number"},
		{".5G", "not a number"},
		{"5.G", "not a number"},
		{"1+2G", "does not start with a number"},
		{"0.3", "not a whole number of bytes"},
		{"1.0000001K", "not a whole number of bytes"},
		{"8192P", "too large"},
		{"8E", "too large"},
		{"9223372036854775808", "too large"},
		{"99999999999999999999T", "too large"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSize(tt.in)
			if err == nil {
				t.Fatalf("ParseSize(%q) = %d, want error containing %q", tt.in, got, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseSize(%q) error %q, want it to contain %q", tt.in, err, tt.want)
			}
		})
	}
}

func TestFormatSize(t *testing.T) {
	tests := []struct {
		in   int64
		want string
	}{
		{0, "0 B"},
		{1, "1 B"},
		{1023, "1023 B"},
		{1024, "1 KiB"},
		{1536, "1.5 KiB"},
		{512 * MiB, "512 MiB"},
		{8 * GiB, "8 GiB"},
		{GiB + GiB/2, "1.5 GiB"},
		{GiB + GiB/4, "1.25 GiB"},
		{GiB + 1, "1 GiB"},        // rounded for display
		{2*GiB - 1, "2 GiB"},      // rounded for display
		{GiB + GiB/3, "1.33 GiB"}, // two decimals at most
		{1024 * GiB, "1 TiB"},
		{3 * PiB, "3 PiB"},
		{1 << 60, "1 EiB"},
		{math.MaxInt64, "8 EiB"},
		{-2 * MiB, "-2 MiB"},
		{math.MinInt64, "-8 EiB"},
	}
	for _, tt := range tests {
		if got := FormatSize(tt.in); got != tt.want {
			t.Errorf("FormatSize(%d) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestSizeRoundTrip(t *testing.T) {
	// Values whose rendering is exact survive FormatSize then ParseSize.
	for _, n := range []int64{1, 100, 1023, KiB, 1536, 3 * MiB, 512 * MiB, 8 * GiB, 16 * GiB,
		GiB + GiB/2, GiB + GiB/4, 5*GiB + 3*GiB/4, 7 * TiB, 2 * PiB, 1 << 60} {
		s := FormatSize(n)
		got, err := ParseSize(s)
		if err != nil {
			t.Errorf("ParseSize(FormatSize(%d) = %q): %v", n, s, err)
			continue
		}
		if got != n {
			t.Errorf("ParseSize(FormatSize(%d) = %q) = %d", n, s, got)
		}
	}
	// Written sizes come back in their canonical form.
	for in, want := range map[string]string{
		"8G": "8 GiB", "16G": "16 GiB", "512M": "512 MiB", "1T": "1 TiB", "1048576": "1 MiB",
		"1536M": "1.5 GiB", "2048K": "2 MiB", "1.5GiB": "1.5 GiB",
	} {
		n, err := ParseSize(in)
		if err != nil {
			t.Errorf("ParseSize(%q): %v", in, err)
			continue
		}
		if got := FormatSize(n); got != want {
			t.Errorf("FormatSize(ParseSize(%q)) = %q, want %q", in, got, want)
		}
	}
}
