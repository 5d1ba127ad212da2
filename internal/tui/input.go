package tui

import (
	"strings"

	tea "charm.land/bubbletea/v2"
)

// lineInput is a one-line text field: typing appends, backspace deletes,
// ctrl+u clears.
type lineInput struct {
	prompt, placeholder string
	value               []rune
	focused             bool
	limit               int
}

func (in *lineInput) Value() string      { return string(in.value) }
func (in *lineInput) SetValue(s string)  { in.value = []rune(s) }
func (in *lineInput) Focus()             { in.focused = true }
func (in *lineInput) Blur()              { in.focused = false }
func (in *lineInput) Focused() bool      { return in.focused }
func (in *lineInput) update(msg tea.Msg) { in.key(msg) }

func (in *lineInput) key(msg tea.Msg) bool {
	k, ok := msg.(tea.KeyPressMsg)
	if !ok {
		return false
	}
	switch k.String() {
	case "backspace", "ctrl+h":
		if len(in.value) > 0 {
			in.value = in.value[:len(in.value)-1]
		}
		return true
	case "ctrl+u":
		in.value = nil
		return true
	}
	if k.Text == "" || k.Mod&(tea.ModCtrl|tea.ModAlt) != 0 {
		return false
	}
	for _, r := range k.Text {
		if r < ' ' || (in.limit > 0 && len(in.value) >= in.limit) {
			continue
		}
		in.value = append(in.value, r)
	}
	return true
}

// view renders the field; the cursor is a block in colour and "_" without.
func (in *lineInput) view(st styles, noColor bool) string {
	var b strings.Builder
	b.WriteString(in.prompt)
	if len(in.value) == 0 && !in.focused {
		b.WriteString(st.dim.Render(in.placeholder))
		return b.String()
	}
	b.WriteString(string(in.value))
	if in.focused {
		if noColor {
			b.WriteString("_")
		} else {
			b.WriteString(st.selected.Render(" "))
		}
	}
	if len(in.value) == 0 && in.placeholder != "" {
		b.WriteString(" " + st.dim.Render(in.placeholder))
	}
	return b.String()
}
