package image

import (
	"banger/internal/command"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// FirecrackerVersion runs `firecracker --version` and returns its first
// line.
func FirecrackerVersion(ctx context.Context, bin string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, errb, err := command.Output(ctx, bin, "--version")
	if err != nil {
		msg := strings.TrimSpace(string(errb))
		if msg == "" {
			msg = errors.Unwrap(err).Error()
		}
		return "", fmt.Errorf("running %s --version: %s", bin, firstLine(msg))
	}
	return firstLine(string(out)), nil
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}
