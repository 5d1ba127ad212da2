package tui

import (
	"fmt"
	"strings"
	"time"

	tea "charm.land/bubbletea/v2"
	"charm.land/lipgloss/v2"
	"github.com/charmbracelet/x/ansi"

	"banger/internal/api"
)

type styles struct {
	title, header, selected, dim, err, warn, good, bad, key lipgloss.Style
}

func newStyles(noColor bool) styles {
	if noColor {
		p := lipgloss.NewStyle()
		return styles{p, p, p, p, p, p, p, p, p}
	}
	return styles{
		title:    lipgloss.NewStyle().Bold(true),
		header:   lipgloss.NewStyle().Bold(true).Foreground(lipgloss.Color("12")),
		selected: lipgloss.NewStyle().Reverse(true),
		dim:      lipgloss.NewStyle().Foreground(lipgloss.Color("8")),
		err:      lipgloss.NewStyle().Foreground(lipgloss.Color("9")).Bold(true),
		warn:     lipgloss.NewStyle().Foreground(lipgloss.Color("11")).Bold(true),
		good:     lipgloss.NewStyle().Foreground(lipgloss.Color("10")),
		bad:      lipgloss.NewStyle().Foreground(lipgloss.Color("9")),
		key:      lipgloss.NewStyle().Bold(true).Foreground(lipgloss.Color("14")),
	}
}

// layout is how the screen's rows are shared out.
type layout struct {
	rows, detail int
	help         []string
}

func (m *Model) layout() layout {
	help := wrapWords(m.helpItems(), max(20, m.width))
	fixed := 1 + 1 + 1 + 1 + len(help) // title, table header, pane rule, status
	avail := max(2, m.height-fixed)
	detail := max(3, min(14, avail*2/5))
	if m.mode == modeForm {
		detail = max(detail, len(m.form.fields)+1)
	}
	rows := avail - detail
	if rows < 1 {
		rows, detail = 1, max(0, avail-1)
	}
	return layout{rows: rows, detail: detail, help: help}
}

type helpItem struct{ key, what string }

func (m *Model) helpItems() []helpItem {
	switch m.mode {
	case modeFilter:
		return []helpItem{{"type", "to narrow"}, {"enter", "keep filter"}, {"esc", "clear"}}
	case modeConfirm:
		return []helpItem{{"y", "confirm"}, {"any other key", "cancel"}}
	case modeForm:
		return []helpItem{{"tab/↓", "next field"}, {"shift+tab/↑", "previous"}, {"enter", "next / create"}, {"esc", "cancel"}}
	}
	return m.keys.help()
}

// wrapWords lays help items out in lines no wider than width.
func wrapWords(items []helpItem, width int) []string {
	var lines []string
	var cur []string
	n := 0
	for _, it := range items {
		w := lipgloss.Width(it.key) + 1 + lipgloss.Width(it.what)
		if n > 0 && n+2+w > width {
			lines = append(lines, strings.Join(cur, "  "))
			cur, n = nil, 0
		}
		if n > 0 {
			n += 2
		}
		cur = append(cur, it.key+"\x00"+it.what)
		n += w
	}
	if len(cur) > 0 {
		lines = append(lines, strings.Join(cur, "  "))
	}
	return lines
}

// View renders the screen.
func (m *Model) View() tea.View {
	v := tea.NewView(m.render())
	v.AltScreen = true
	v.WindowTitle = "banger"
	return v
}

func (m *Model) render() string {
	lay := m.layout()
	var out []string
	out = append(out, m.titleLine())
	out = append(out, m.tableLines(lay.rows)...)
	out = append(out, m.paneLines(lay.detail)...)
	out = append(out, m.statusLine())
	for _, h := range lay.help {
		parts := strings.Split(h, "  ")
		for i, p := range parts {
			k, what, _ := strings.Cut(p, "\x00")
			parts[i] = m.st.key.Render(k) + " " + m.st.dim.Render(what)
		}
		out = append(out, strings.Join(parts, "  "))
	}
	for i, l := range out {
		out[i] = ansi.Truncate(l, m.width, "…")
	}
	s := strings.Join(out, "\n")
	if m.opts.NoColor {
		s = ansi.Strip(s)
	}
	return s
}

func (m *Model) titleLine() string {
	running := 0
	for _, v := range m.vms {
		if v.State == api.StateRunning {
			running++
		}
	}
	left := m.st.title.Render("banger") + fmt.Sprintf("  %d vms, %d running  events: %s", len(m.vms), running, m.stream)
	if q := m.filter.Value(); q != "" && m.mode != modeFilter {
		left += fmt.Sprintf("  filter: %q (%d shown, esc clears)", q, len(m.visible))
	}
	return left
}

// column is one table column.
type column struct {
	title    string
	priority int // lower stays longer when the screen is narrow
	right    bool
	max      int
	value    func(v api.VM) string
}

func (m *Model) columns() []column {
	now := m.opts.Now()
	dash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	return []column{
		{title: "NAME", priority: 0, max: 24, value: func(v api.VM) string { return v.Name }},
		{title: "STATE", priority: 1, max: 10, value: func(v api.VM) string {
			if b, ok := m.busy[v.ID]; ok && v.State != api.StateStarting && v.State != api.StateStopping {
				return progressive(strings.Fields(b)[0]) + "…"
			}
			return v.State
		}},
		{title: "HEALTH", priority: 2, max: 9, value: func(v api.VM) string {
			if v.State != api.StateRunning {
				return "-"
			}
			h, ok := m.health[v.ID]
			switch {
			case !ok:
				return "?"
			case h.Healthy:
				return "healthy"
			}
			return "unhealthy"
		}},
		{title: "IP", priority: 3, max: 15, value: func(v api.VM) string { return dash(v.IP) }},
		{title: "VCPU", priority: 5, right: true, max: 4, value: func(v api.VM) string { return fmt.Sprint(v.VCPU) }},
		{title: "MEM", priority: 6, right: true, max: 9, value: func(v api.VM) string { return iec(int64(v.MemoryMiB) << 20) }},
		{title: "CPU%", priority: 4, right: true, max: 6, value: func(v api.VM) string {
			if s, ok := m.stats[v.ID]; ok && s.PID > 0 {
				return fmt.Sprintf("%.1f", s.CPUPercent)
			}
			return "-"
		}},
		{title: "RSS", priority: 7, right: true, max: 9, value: func(v api.VM) string {
			if s, ok := m.stats[v.ID]; ok && s.PID > 0 {
				return iec(s.RSSBytes)
			}
			return "-"
		}},
		{title: "NAT", priority: 9, max: 3, value: func(v api.VM) string {
			if v.NAT {
				return "on"
			}
			return "-"
		}},
		{title: "DNS", priority: 11, max: 28, value: func(v api.VM) string { return dash(v.DNSName) }},
		{title: "IMAGE", priority: 10, max: 16, value: func(v api.VM) string { return dash(v.Image) }},
		{title: "UPTIME", priority: 8, right: true, max: 8, value: func(v api.VM) string {
			if v.State != api.StateRunning || v.StartedAt.IsZero() {
				return "-"
			}
			return duration(now.Sub(v.StartedAt))
		}},
		{title: "LAST USED", priority: 12, right: true, max: 10, value: func(v api.VM) string {
			if v.LastUsedAt.IsZero() {
				return "-"
			}
			return duration(now.Sub(v.LastUsedAt)) + " ago"
		}},
	}
}

// fitColumns picks the columns that fit in width, by priority, and their
// widths.
func (m *Model) fitColumns(width int) ([]column, []int) {
	cols := m.columns()
	widths := make([]int, len(cols))
	for i, c := range cols {
		w := lipgloss.Width(c.title)
		for _, id := range m.visible {
			w = max(w, lipgloss.Width(c.value(m.vms[id])))
		}
		widths[i] = min(w, max(c.max, lipgloss.Width(c.title)))
	}
	keep := make([]bool, len(cols))
	used := 2 // selection marker
	for p := 0; p <= 12; p++ {
		for i, c := range cols {
			if c.priority != p {
				continue
			}
			need := widths[i]
			if used > 2 {
				need += 2
			}
			if used+need <= width || p == 0 {
				keep[i] = true
				used += need
			}
		}
	}
	var outC []column
	var outW []int
	for i := range cols {
		if keep[i] {
			outC = append(outC, cols[i])
			outW = append(outW, widths[i])
		}
	}
	return outC, outW
}

func (m *Model) tableLines(rows int) []string {
	cols, widths := m.fitColumns(m.width)
	cell := func(c column, w int, s string) string {
		s = ansi.Truncate(s, w, "…")
		pad := strings.Repeat(" ", max(0, w-lipgloss.Width(s)))
		if c.right {
			return pad + s
		}
		return s + pad
	}
	var hdr []string
	for i, c := range cols {
		hdr = append(hdr, cell(c, widths[i], c.title))
	}
	out := []string{m.st.header.Render("  " + strings.TrimRight(strings.Join(hdr, "  "), " "))}
	switch {
	case !m.loaded:
		out = append(out, m.st.dim.Render("  loading…"))
	case len(m.visible) == 0 && len(m.vms) == 0:
		out = append(out, m.st.dim.Render("  no vms yet: press c to create one"))
	case len(m.visible) == 0:
		out = append(out, m.st.dim.Render(fmt.Sprintf("  no vm matches %q: esc clears the filter", m.filter.Value())))
	}
	end := min(len(m.visible), m.top+rows)
	for _, id := range m.visible[min(m.top, end):end] {
		v := m.vms[id]
		var cells []string
		for i, c := range cols {
			s := cell(c, widths[i], c.value(v))
			if id != m.sel {
				s = m.cellStyle(c.title, v, s)
			}
			cells = append(cells, s)
		}
		line := strings.Join(cells, "  ")
		if id == m.sel {
			line = "> " + line
			if m.opts.NoColor {
				line = strings.TrimRight(line, " ")
			} else {
				line += strings.Repeat(" ", max(0, m.width-lipgloss.Width(line)))
				line = m.st.selected.Render(line)
			}
		} else {
			line = "  " + strings.TrimRight(line, " ")
		}
		out = append(out, line)
	}
	for len(out) < rows+1 {
		out = append(out, "")
	}
	return out[:rows+1]
}

func (m *Model) cellStyle(title string, v api.VM, s string) string {
	switch title {
	case "STATE":
		switch v.State {
		case api.StateRunning:
			return m.st.good.Render(s)
		case api.StateError:
			return m.st.bad.Render(s)
		case api.StateStarting, api.StateStopping:
			return m.st.warn.Render(s)
		}
		return m.st.dim.Render(s)
	case "HEALTH":
		if strings.HasPrefix(s, "unhealthy") {
			return m.st.bad.Render(s)
		}
		if strings.HasPrefix(s, "healthy") {
			return m.st.good.Render(s)
		}
	}
	return s
}

// paneLines renders the rule and the detail pane (or the create form).
func (m *Model) paneLines(height int) []string {
	var body []string
	title := "details"
	v, ok := m.vms[m.sel]
	switch {
	case m.mode == modeForm:
		title = "create"
		body = m.form.view(m.st, m.opts.NoColor)
	case ok:
		title = fmt.Sprintf("%s (%s)", v.Name, v.ID)
		body = m.detail(v, height)
	}
	rule := "── " + m.st.title.Render(title) + " "
	rule += strings.Repeat("─", max(0, m.width-lipgloss.Width(rule)))
	out := []string{rule}
	out = append(out, body...)
	for len(out) < height+1 {
		out = append(out, "")
	}
	return out[:height+1]
}

func (m *Model) detail(v api.VM, height int) []string {
	state := v.State
	if v.StopReason != "" && v.State == api.StateStopped {
		state += " (" + v.StopReason + ")"
	}
	if h, ok := m.health[v.ID]; ok && v.State == api.StateRunning {
		if h.Healthy {
			state += fmt.Sprintf(", healthy (agent %.1f ms)", h.RTTMillis)
		} else {
			state += ", unhealthy: " + h.Reason
		}
	}
	if v.PID > 0 {
		state += fmt.Sprintf(", pid %d", v.PID)
	}
	if len(v.PendingChanges) > 0 {
		state += ", pending " + strings.Join(v.PendingChanges, ", ")
	}
	lines := []string{
		m.kv("state", state+"  "+v.IP+"  "+v.DNSName),
		m.kv("root", fmt.Sprintf("%s (%s, %s)", v.RootDisk, iec(v.DiskBytes), v.StorageDriver)),
		m.kv("work", fmt.Sprintf("%s (%s)", v.WorkDisk, iec(v.WorkDiskBytes))),
		m.kv("vsock", fmt.Sprintf("cid %d  %s", v.CID, v.VsockPath)),
		m.kv("api", v.APISocket),
	}
	if len(v.Forwards) > 0 {
		lines = append(lines, m.kv("ports", forwardsLine(v.Forwards)))
	}
	if v.LastError != "" {
		lines = append(lines, m.kv("error", m.st.err.Render(v.LastError)))
	}
	room := height - len(lines)
	if room <= 0 {
		return lines[:max(0, height)]
	}
	tail := m.logTail
	if m.logFor != v.ID {
		tail = nil
	}
	switch {
	case m.logErr != "" && m.logFor == v.ID:
		lines = append(lines, m.kv("log", m.st.dim.Render(m.logErr)))
	case len(tail) == 0:
		lines = append(lines, m.kv("log", m.st.dim.Render("(empty)")))
	default:
		if len(tail) > room {
			tail = tail[len(tail)-room:]
		}
		for i, l := range tail {
			k := ""
			if i == 0 {
				k = "log"
			}
			lines = append(lines, m.kv(k, ansi.Strip(l)))
		}
	}
	return lines
}

func (m *Model) kv(k, v string) string {
	return m.st.dim.Render(fmt.Sprintf("%-6s", k)) + v
}

func (m *Model) statusLine() string {
	switch m.mode {
	case modeFilter:
		return m.filter.view(m.st, m.opts.NoColor)
	case modeConfirm:
		return m.st.warn.Render(m.status)
	}
	if m.statusErr {
		return m.st.err.Render("error: ") + m.status
	}
	return m.status
}

// iec renders a size in IEC units: 512 MiB, 8.0 GiB.
func iec(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for x := n / unit; x >= unit && exp < 4; x /= unit {
		div *= unit
		exp++
	}
	v := float64(n) / float64(div)
	suffix := []string{"KiB", "MiB", "GiB", "TiB", "PiB"}[exp]
	if v == float64(int64(v)) {
		return fmt.Sprintf("%d %s", int64(v), suffix)
	}
	return fmt.Sprintf("%.1f %s", v, suffix)
}

// duration renders 2h13m, 5m3s, 12s.
func duration(d time.Duration) string {
	d = max(0, d)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
}
