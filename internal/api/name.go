package api

// ValidName reports whether s is a DNS label as banger uses them for VM and
// image names: 1 to 63 lowercase letters, digits and hyphens, not starting
// or ending with a hyphen. Both the CLI and the daemon check it.
func ValidName(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}
