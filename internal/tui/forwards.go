package tui

import (
	"fmt"
	"slices"
	"strings"

	"banger/internal/api"
)

// applyForward updates a VM's forwards from a vm.forward event.
func applyForward(fs []api.Forward, stage string, f api.Forward) []api.Forward {
	fs = slices.DeleteFunc(slices.Clone(fs), func(o api.Forward) bool {
		return o.Kind == f.Kind && o.GuestPort == f.GuestPort && o.HostAddr == f.HostAddr
	})
	if stage == "open" {
		fs = append(fs, f)
	}
	return fs
}

// forwardsLine is the detail view's ports line: "127.0.0.1:8080→80 ...".
func forwardsLine(fs []api.Forward) string {
	var parts []string
	for _, f := range fs {
		p := fmt.Sprintf("%s→%d", f.Host(), f.GuestPort)
		if f.Error != "" {
			p += " (not held)"
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, "  ")
}
