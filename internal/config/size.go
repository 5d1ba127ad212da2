package config

import (
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
)

// Size units. K, M, G, T, P and E are IEC (1024-based) whether written "G" or
// "GiB".
const (
	KiB int64 = 1 << (10 * (iota + 1))
	MiB
	GiB
	TiB
	PiB
	EiB
)

var sizeUnits = [...]struct {
	letter byte
	mult   int64
}{{'K', KiB}, {'M', MiB}, {'G', GiB}, {'T', TiB}, {'P', PiB}, {'E', EiB}}

// ParseSize parses a disk size: "8G", "8GiB", "512M", "512MiB", "1T",
// "1.5G", "8 GiB" or a plain number of bytes ("1048576", "1048576B"). Units
// are case-insensitive and 1024-based. Every size banger takes is a size
// something must have, so zero is refused, as are negatives, fractions of a
// byte, SI suffixes ("GB"), and values over 2^63-1 bytes.
func ParseSize(s string) (int64, error) {
	in := strings.TrimSpace(s)
	if in == "" {
		return 0, fmt.Errorf("empty size; use a size such as 8G or 512MiB")
	}
	i := 0
	for i < len(in) && (in[i] >= '0' && in[i] <= '9' || in[i] == '.' || in[i] == '-' || in[i] == '+') {
		i++
	}
	num, unit := in[:i], strings.TrimSpace(in[i:])
	if strings.HasPrefix(num, "-") {
		return 0, fmt.Errorf("size %q is negative; use a size such as 8G", s)
	}
	num = strings.TrimPrefix(num, "+")
	if num == "" || strings.ContainsAny(num, "+-") {
		return 0, fmt.Errorf("size %q does not start with a number; use a size such as 8G or 512MiB", s)
	}
	mult, err := sizeMultiplier(unit)
	if err != nil {
		return 0, fmt.Errorf("size %q: %w", s, err)
	}
	r, ok := new(big.Rat).SetString(num)
	if !ok || strings.Count(num, ".") > 1 || strings.HasPrefix(num, ".") || strings.HasSuffix(num, ".") {
		return 0, fmt.Errorf("size %q: %q is not a number; use a size such as 8G or 1.5GiB", s, num)
	}
	r.Mul(r, new(big.Rat).SetInt64(mult))
	if !r.IsInt() {
		return 0, fmt.Errorf("size %q is not a whole number of bytes", s)
	}
	n := r.Num()
	if !n.IsInt64() {
		return 0, fmt.Errorf("size %q is too large (the limit is %s)", s, FormatSize(math.MaxInt64))
	}
	if n.Sign() == 0 {
		return 0, fmt.Errorf("size %q is zero; use a size such as 8G", s)
	}
	return n.Int64(), nil
}

func sizeMultiplier(unit string) (int64, error) {
	u := strings.ToUpper(unit)
	if u == "" || u == "B" {
		return 1, nil
	}
	for _, su := range sizeUnits {
		if u[0] != su.letter {
			continue
		}
		switch u[1:] {
		case "", "IB":
			return su.mult, nil
		case "B":
			return 0, fmt.Errorf("unit %q is ambiguous (SI or IEC?); write %c or %ciB, which are 1024-based", unit, su.letter, su.letter)
		}
	}
	return 0, fmt.Errorf("unknown unit %q; use K, M, G or T (or KiB, MiB, GiB, TiB), all 1024-based", unit)
}

// FormatSize renders a byte count with the largest IEC unit it reaches and
// at most two decimals: "8 GiB", "512 MiB", "1.5 GiB", "100 B". Whole
// multiples and values with up to two decimals in their unit are exact, so
// ParseSize(FormatSize(n)) == n for them.
func FormatSize(n int64) string {
	if n < 0 {
		if n == math.MinInt64 {
			return "-8 EiB"
		}
		return "-" + FormatSize(-n)
	}
	names := [...]string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	unit, name := int64(1), "B"
	for i, m := 0, KiB; i < len(names); i, m = i+1, m<<10 {
		if n < m {
			break
		}
		unit, name = m, names[i]
		if m > math.MaxInt64>>10 {
			break
		}
	}
	if n%unit == 0 {
		return strconv.FormatInt(n/unit, 10) + " " + name
	}
	v := new(big.Rat).SetFrac(big.NewInt(n), big.NewInt(unit))
	s := strings.TrimRight(strings.TrimRight(v.FloatString(2), "0"), ".")
	return s + " " + name
}
