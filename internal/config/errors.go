package config

import (
	"fmt"
	"strings"
)

// Error is every load and validation error. Error() is one line:
// "<file>:<line>: <key>: <message>", with the parts that are unknown left
// out (no file:line when the value did not come from the file).
type Error struct {
	File string
	Line int
	Key  string
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d", e.Line)
		}
		b.WriteString(": ")
	}
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	// Keep the promise of one line whatever a wrapped message holds.
	b.WriteString(strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(e.Msg))
	return b.String()
}

// keyError is an error about one key with no location yet.
func keyError(key, format string, args ...any) *Error {
	return &Error{Key: key, Msg: fmt.Sprintf(format, args...)}
}
