package tui

import "charm.land/bubbles/v2/key"

// keyMap is the normal-mode key bindings, in help-bar order.
type keyMap struct {
	Up, Down, PgUp, PgDown, Home, End       key.Binding
	Start, Stop, Restart, Kill, Delete, NAT key.Binding
	SSH, Create, Filter, ClearFilter, Quit  key.Binding
}

func newKeyMap() keyMap {
	b := func(help, what string, keys ...string) key.Binding {
		return key.NewBinding(key.WithKeys(keys...), key.WithHelp(help, what))
	}
	return keyMap{
		Up:          b("↑↓", "select", "up", "k"),
		Down:        b("", "", "down", "j"),
		PgUp:        b("", "", "pgup"),
		PgDown:      b("", "", "pgdown"),
		Home:        b("", "", "home", "g"),
		End:         b("", "", "end", "G"),
		Start:       b("s", "start", "s"),
		Stop:        b("x", "stop", "x"),
		Restart:     b("r", "restart", "r"),
		Kill:        b("K", "kill", "K"),
		Delete:      b("d", "delete", "d"),
		NAT:         b("n", "toggle nat", "n"),
		SSH:         b("enter", "ssh", "enter"),
		Create:      b("c", "create", "c"),
		Filter:      b("/", "filter", "/"),
		ClearFilter: b("", "", "esc"),
		Quit:        b("q", "quit", "q", "ctrl+c"),
	}
}

// help lists the bindings that have help text.
func (k keyMap) help() []helpItem {
	var out []helpItem
	for _, b := range []key.Binding{k.Up, k.Start, k.Stop, k.Restart, k.Kill, k.Delete, k.NAT, k.SSH, k.Create, k.Filter, k.Quit} {
		if h := b.Help(); h.Key != "" {
			out = append(out, helpItem{h.Key, h.Desc})
		}
	}
	return out
}
