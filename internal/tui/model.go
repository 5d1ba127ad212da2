package tui

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"charm.land/bubbles/v2/key"
	tea "charm.land/bubbletea/v2"

	"banger/internal/api"
)

// Options tune the UI.
type Options struct {
	// NoColor renders plain text (NO_COLOR): no colours or attributes, the
	// selection shown by a marker only.
	NoColor bool
	// StatsInterval is how often vm.stats is refreshed (default 5s).
	StatsInterval time.Duration
	// CallTimeout bounds each short daemon call (default 30s); create and
	// start, which wait for a boot, get ten times as long.
	CallTimeout time.Duration
	// Now is the clock for uptimes and relative times (default time.Now).
	Now func() time.Time
	// SSH returns a command that suspends the UI, runs `banger vm ssh NAME`
	// attached to the terminal, and reports its end through done
	// (tea.ExecProcess in production). Nil disables ssh.
	SSH func(name string, done func(error) tea.Msg) tea.Cmd
}

type mode int

const (
	modeNormal mode = iota
	modeConfirm
	modeFilter
	modeForm
)

// confirmation is an action waiting for y/N.
type confirmation struct {
	verb, method, id, name string
}

// Model is the bubbletea model of `banger tui`.
type Model struct {
	d    Daemon
	opts Options
	st   styles
	keys keyMap

	width, height int

	vms     map[string]api.VM // by ID
	stats   map[string]api.Stats
	health  map[string]api.Health
	visible []string // IDs shown, sorted by name, filtered
	sel     string   // selected VM ID
	top     int      // first visible row (scrolling)
	loaded  bool

	mode    mode
	confirm confirmation
	filter  lineInput
	form    createForm

	busy      map[string]string // VM ID -> verb running
	creating  int               // vm.create calls in flight
	status    string
	statusErr bool
	stream    string // event stream state shown in the title bar

	logFor  string
	logTail []string
	logErr  string
}

// New returns the model for d.
func New(d Daemon, opts Options) *Model {
	if opts.StatsInterval <= 0 {
		opts.StatsInterval = 5 * time.Second
	}
	if opts.CallTimeout <= 0 {
		opts.CallTimeout = 30 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	fi := lineInput{prompt: "/", placeholder: "name, state, image or ip", limit: 64}
	return &Model{
		d: d, opts: opts, st: newStyles(opts.NoColor), keys: newKeyMap(),
		width: 80, height: 24,
		vms: map[string]api.VM{}, stats: map[string]api.Stats{}, health: map[string]api.Health{},
		busy: map[string]string{}, filter: fi, form: newCreateForm(),
		stream: "connecting",
	}
}

// Messages from commands.
type (
	listMsg struct {
		vms []api.VM
		err error
	}
	statsMsg struct {
		stats []api.Stats
		err   error
	}
	statsTickMsg struct{}
	healthMsg    struct {
		id, name string
		h        api.Health
		err      error
		afterSSH bool
	}
	actionMsg struct {
		verb, id, name string
		res            api.VMResult
		err            error
	}
	logMsg struct {
		id    string
		lines []string
		err   error
	}
	sshDoneMsg struct {
		id, name string
		err      error
	}
)

// Init loads the VM list and stats and starts the stats refresh.
func (m *Model) Init() tea.Cmd {
	return tea.Batch(m.loadList(), m.loadStats(), m.statsTick())
}

func (m *Model) call(long bool, fn func(ctx context.Context) tea.Msg) tea.Cmd {
	timeout := m.opts.CallTimeout
	if long {
		timeout *= 10
	}
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		return fn(ctx)
	}
}

func (m *Model) loadList() tea.Cmd {
	return m.call(false, func(ctx context.Context) tea.Msg {
		vms, err := m.d.ListVMs(ctx)
		return listMsg{vms, err}
	})
}

func (m *Model) loadStats() tea.Cmd {
	return m.call(false, func(ctx context.Context) tea.Msg {
		s, err := m.d.Stats(ctx)
		return statsMsg{s, err}
	})
}

func (m *Model) statsTick() tea.Cmd {
	return tea.Tick(m.opts.StatsInterval, func(time.Time) tea.Msg { return statsTickMsg{} })
}

func (m *Model) checkHealth(vm api.VM, afterSSH bool) tea.Cmd {
	return m.call(false, func(ctx context.Context) tea.Msg {
		h, err := m.d.Health(ctx, vm.ID)
		return healthMsg{id: vm.ID, name: vm.Name, h: h, err: err, afterSSH: afterSSH}
	})
}

func (m *Model) loadLog(vm api.VM) tea.Cmd {
	if vm.Dir == "" {
		return nil
	}
	return func() tea.Msg {
		lines, err := tailFile(vm.Dir+"/console.log", 8<<10)
		return logMsg{id: vm.ID, lines: lines, err: err}
	}
}

// Update handles one message.
func (m *Model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
		m.clampScroll()
		return m, nil
	case tea.KeyPressMsg:
		return m, m.key(msg)
	case listMsg:
		if msg.err != nil {
			m.setErr("listing vms: %s", errText(msg.err))
			return m, nil
		}
		m.loaded = true
		m.vms = map[string]api.VM{}
		var cmds []tea.Cmd
		for _, v := range msg.vms {
			m.vms[v.ID] = v
			if v.State == api.StateRunning {
				cmds = append(cmds, m.checkHealth(v, false))
			}
		}
		for id := range m.health {
			if v, ok := m.vms[id]; !ok || v.State != api.StateRunning {
				delete(m.health, id)
			}
		}
		cmds = append(cmds, m.refresh())
		return m, tea.Batch(cmds...)
	case statsMsg:
		if msg.err != nil {
			m.setErr("reading vm stats: %s", errText(msg.err))
			return m, nil
		}
		m.stats = map[string]api.Stats{}
		for _, s := range msg.stats {
			m.stats[s.VM] = s
		}
		return m, nil
	case statsTickMsg:
		cmds := []tea.Cmd{m.loadStats(), m.statsTick()}
		if v, ok := m.vms[m.sel]; ok {
			cmds = append(cmds, m.loadLog(v))
		}
		return m, tea.Batch(cmds...)
	case healthMsg:
		return m, m.onHealth(msg)
	case logMsg:
		if msg.id == m.sel {
			m.logFor, m.logTail, m.logErr = msg.id, msg.lines, ""
			if msg.err != nil {
				m.logTail, m.logErr = nil, msg.err.Error()
			}
		}
		return m, nil
	case eventMsg:
		return m, m.onEvent(api.Event(msg))
	case streamMsg:
		if msg.up {
			m.stream = "live"
			// Catch up on what changed while the stream was down.
			return m, tea.Batch(m.loadList(), m.loadStats())
		}
		m.stream = "reconnecting"
		m.setErr("lost the daemon's event stream (%s); reconnecting", errText(msg.err))
		return m, nil
	case actionMsg:
		return m, m.onAction(msg)
	case sshDoneMsg:
		if msg.err != nil {
			m.setErr("ssh %s: %s", msg.name, errText(msg.err))
		}
		v, ok := m.vms[msg.id]
		if !ok {
			return m, nil
		}
		return m, m.checkHealth(v, true)
	}
	return m, nil
}

func (m *Model) onHealth(msg healthMsg) tea.Cmd {
	v, ok := m.vms[msg.id]
	if msg.err != nil {
		delete(m.health, msg.id)
		if msg.afterSSH {
			m.setErr("checking %s after ssh: %s", msg.name, errText(msg.err))
		}
		return nil
	}
	if ok && v.State == api.StateRunning {
		m.health[msg.id] = msg.h
	}
	if msg.afterSSH {
		switch {
		case msg.h.Healthy:
			m.setStatus("%s is still running (healthy); stop it with x or `banger vm stop %s`", msg.name, msg.name)
		case msg.h.State == api.StateRunning:
			m.setStatus("%s is still running but unhealthy: %s", msg.name, msg.h.Reason)
		default:
			m.setStatus("%s is %s", msg.name, msg.h.State)
		}
	}
	return nil
}

func (m *Model) onEvent(ev api.Event) tea.Cmd {
	switch ev.Kind {
	case api.EventVMState:
		if ev.VM == nil {
			return nil
		}
		old, had := m.vms[ev.VM.ID]
		m.vms[ev.VM.ID] = *ev.VM
		var cmds []tea.Cmd
		if ev.VM.State != api.StateRunning {
			delete(m.health, ev.VM.ID)
		} else if !had || old.State != api.StateRunning {
			cmds = append(cmds, m.checkHealth(*ev.VM, false))
		}
		cmds = append(cmds, m.refresh())
		return tea.Batch(cmds...)
	case api.EventVMDeleted:
		id := ev.VMID
		if id == "" && ev.VM != nil {
			id = ev.VM.ID
		}
		delete(m.vms, id)
		delete(m.health, id)
		delete(m.stats, id)
		return m.refresh()
	case api.EventVMForward:
		if v, ok := m.vms[ev.VMID]; ok && ev.Forward != nil {
			v.Forwards = applyForward(v.Forwards, ev.Stage, *ev.Forward)
			m.vms[ev.VMID] = v
			return m.refresh()
		}
	case api.EventVMProgress:
		// Progress shows only while this UI waits for that VM, so a late
		// event never hides the final result.
		if _, ok := m.busy[ev.VMID]; !ok && m.creating == 0 {
			return nil
		}
		name := ev.VMID
		if ev.VM != nil {
			name = ev.VM.Name
		}
		m.setStatus("%s: %s %.1fs %s", name, ev.Stage, ev.Elapsed, ev.Message)
	}
	return nil
}

func (m *Model) onAction(msg actionMsg) tea.Cmd {
	delete(m.busy, msg.id)
	if msg.verb == "create" {
		m.creating--
	}
	if msg.err != nil {
		m.setErr("%s %s: %s", msg.verb, msg.name, errText(msg.err))
		return nil
	}
	res := msg.res
	var cmds []tea.Cmd
	switch {
	case msg.verb == "delete":
		delete(m.vms, msg.id)
		delete(m.health, msg.id)
	case res.VM.ID != "":
		m.vms[res.VM.ID] = res.VM
		if res.Health != nil && res.VM.State == api.StateRunning {
			m.health[res.VM.ID] = *res.Health
		}
		if msg.verb == "create" {
			m.sel = res.VM.ID
		}
	}
	text := pastTense(msg.verb) + " " + msg.name
	if res.VM.Name != "" {
		text = pastTense(msg.verb) + " " + res.VM.Name
	}
	if len(res.Notices) > 0 {
		text += "; " + strings.Join(res.Notices, "; ")
	}
	if h := res.Health; h != nil && !h.Healthy {
		m.setErr("%s, but it is unhealthy: %s", text, h.Reason)
	} else {
		m.setStatus("%s", text)
	}
	cmds = append(cmds, m.refresh())
	return tea.Batch(cmds...)
}

func (m *Model) setStatus(format string, args ...any) {
	m.status, m.statusErr = fmt.Sprintf(format, args...), false
}

func (m *Model) setErr(format string, args ...any) {
	m.status, m.statusErr = fmt.Sprintf(format, args...), true
}

// refresh recomputes the visible rows, keeps the selection on the same VM
// when it is still shown, and loads the selected VM's log when it changed.
func (m *Model) refresh() tea.Cmd {
	q := strings.ToLower(strings.TrimSpace(m.filter.Value()))
	m.visible = m.visible[:0]
	for id, v := range m.vms {
		if q == "" || matches(v, q) {
			m.visible = append(m.visible, id)
		}
	}
	sort.Slice(m.visible, func(i, j int) bool {
		a, b := m.vms[m.visible[i]], m.vms[m.visible[j]]
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		return a.ID < b.ID
	})
	if m.index(m.sel) < 0 {
		m.sel = ""
		if len(m.visible) > 0 {
			m.sel = m.visible[0]
		}
	}
	m.clampScroll()
	if m.sel != "" && m.sel != m.logFor {
		m.logFor, m.logTail, m.logErr = m.sel, nil, ""
		return m.loadLog(m.vms[m.sel])
	}
	return nil
}

func matches(v api.VM, q string) bool {
	for _, s := range []string{v.Name, v.ID, v.State, v.Image, v.IP} {
		if strings.Contains(strings.ToLower(s), q) {
			return true
		}
	}
	return false
}

func (m *Model) index(id string) int {
	for i, v := range m.visible {
		if v == id {
			return i
		}
	}
	return -1
}

func (m *Model) move(delta int) tea.Cmd {
	if len(m.visible) == 0 {
		return nil
	}
	i := m.index(m.sel) + delta
	i = max(0, min(i, len(m.visible)-1))
	m.sel = m.visible[i]
	return m.refresh()
}

func (m *Model) clampScroll() {
	rows := m.layout().rows
	i := m.index(m.sel)
	if i < m.top {
		m.top = i
	}
	if rows > 0 && i >= m.top+rows {
		m.top = i - rows + 1
	}
	m.top = max(0, min(m.top, len(m.visible)-rows))
}

func (m *Model) key(k tea.KeyPressMsg) tea.Cmd {
	s := k.String()
	if s == "ctrl+c" {
		return tea.Quit
	}
	switch m.mode {
	case modeConfirm:
		m.mode = modeNormal
		if s == "y" || s == "Y" {
			c := m.confirm
			return m.run(c.verb, c.method, c.id, c.name)
		}
		m.setStatus("%s %s cancelled", m.confirm.verb, m.confirm.name)
		return nil
	case modeFilter:
		switch s {
		case "enter":
			m.mode = modeNormal
			m.filter.Blur()
			return nil
		case "esc":
			m.mode = modeNormal
			m.filter.Blur()
			m.filter.SetValue("")
			return m.refresh()
		}
		m.filter.update(k)
		return m.refresh()
	case modeForm:
		switch s {
		case "esc":
			m.mode = modeNormal
			m.setStatus("create cancelled")
			return nil
		case "enter":
			if !m.form.last() {
				return m.form.next()
			}
			p, err := m.form.params()
			if err != nil {
				m.setErr("%s", err.Error())
				return nil
			}
			m.mode = modeNormal
			return m.create(p)
		}
		return m.form.update(k)
	}
	km := m.keys
	vm, ok := m.vms[m.sel]
	switch {
	case key.Matches(k, km.Quit):
		return tea.Quit
	case key.Matches(k, km.Up):
		return m.move(-1)
	case key.Matches(k, km.Down):
		return m.move(1)
	case key.Matches(k, km.PgUp):
		return m.move(-max(1, m.layout().rows))
	case key.Matches(k, km.PgDown):
		return m.move(max(1, m.layout().rows))
	case key.Matches(k, km.Home):
		return m.move(-len(m.visible))
	case key.Matches(k, km.End):
		return m.move(len(m.visible))
	case key.Matches(k, km.Filter):
		m.mode = modeFilter
		m.filter.Focus()
		return nil
	case key.Matches(k, km.ClearFilter):
		if m.filter.Value() != "" {
			m.filter.SetValue("")
			return m.refresh()
		}
		return nil
	case key.Matches(k, km.Create):
		m.mode = modeForm
		m.form.reset()
		return m.form.focus()
	}
	vmKeys := []key.Binding{km.Start, km.Restart, km.Stop, km.Kill, km.Delete, km.NAT, km.SSH}
	if !ok {
		if key.Matches(k, vmKeys...) {
			m.setErr("no vm selected")
		}
		return nil
	}
	switch {
	case key.Matches(k, km.Start):
		return m.run("start", api.MethodVMStart, vm.ID, vm.Name)
	case key.Matches(k, km.Restart):
		return m.run("restart", api.MethodVMRestart, vm.ID, vm.Name)
	case key.Matches(k, km.Stop):
		return m.ask("stop", api.MethodVMStop, vm)
	case key.Matches(k, km.Kill):
		return m.ask("kill", api.MethodVMKill, vm)
	case key.Matches(k, km.Delete):
		return m.ask("delete", api.MethodVMDelete, vm)
	case key.Matches(k, km.NAT):
		return m.toggleNAT(vm)
	case key.Matches(k, km.SSH):
		return m.ssh(vm)
	}
	return nil
}

func (m *Model) ask(verb, method string, vm api.VM) tea.Cmd {
	m.mode = modeConfirm
	m.confirm = confirmation{verb: verb, method: method, id: vm.ID, name: vm.Name}
	what := verb + " " + vm.Name
	if verb == "delete" {
		what += " and its disks"
	}
	m.setStatus("%s? [y/N]", what)
	return nil
}

func (m *Model) run(verb, method, id, name string) tea.Cmd {
	if b, ok := m.busy[id]; ok {
		m.setErr("%s is busy: %s is still running", name, b)
		return nil
	}
	m.busy[id] = verb
	m.setStatus("%s %s…", progressive(verb), name)
	long := method == api.MethodVMStart || method == api.MethodVMRestart
	return m.call(long, func(ctx context.Context) tea.Msg {
		res, err := m.d.Action(ctx, method, id)
		return actionMsg{verb: verb, id: id, name: name, res: res, err: err}
	})
}

func (m *Model) toggleNAT(vm api.VM) tea.Cmd {
	if b, ok := m.busy[vm.ID]; ok {
		m.setErr("%s is busy: %s is still running", vm.Name, b)
		return nil
	}
	on := !vm.NAT
	verb := "disable nat on"
	if on {
		verb = "enable nat on"
	}
	m.busy[vm.ID] = verb
	m.setStatus("%s %s…", verb, vm.Name)
	return m.call(false, func(ctx context.Context) tea.Msg {
		res, err := m.d.SetNAT(ctx, vm.ID, on)
		return actionMsg{verb: verb, id: vm.ID, name: vm.Name, res: res, err: err}
	})
}

func (m *Model) create(p api.VMCreateParams) tea.Cmd {
	label := p.Name
	if label == "" {
		label = "a new vm"
	}
	m.setStatus("creating %s…", label)
	m.creating++
	return m.call(true, func(ctx context.Context) tea.Msg {
		res, err := m.d.Create(ctx, p)
		return actionMsg{verb: "create", id: res.VM.ID, name: label, res: res, err: err}
	})
}

func (m *Model) ssh(vm api.VM) tea.Cmd {
	if m.opts.SSH == nil {
		m.setErr("ssh is not available here")
		return nil
	}
	if vm.State != api.StateRunning {
		m.setErr("%s is %s; start it with s first", vm.Name, vm.State)
		return nil
	}
	m.setStatus("ssh %s…", vm.Name)
	return m.opts.SSH(vm.Name, func(err error) tea.Msg {
		return sshDoneMsg{id: vm.ID, name: vm.Name, err: err}
	})
}

func pastTense(verb string) string {
	switch verb {
	case "start":
		return "started"
	case "stop":
		return "stopped"
	case "restart":
		return "restarted"
	case "kill":
		return "killed"
	case "delete":
		return "deleted"
	case "create":
		return "created"
	case "enable nat on":
		return "enabled nat on"
	case "disable nat on":
		return "disabled nat on"
	}
	return verb
}

func progressive(verb string) string {
	switch verb {
	case "stop":
		return "stopping"
	case "delete":
		return "deleting"
	case "create":
		return "creating"
	}
	if strings.HasSuffix(verb, "e") {
		return strings.TrimSuffix(verb, "e") + "ing"
	}
	return verb + "ing"
}

// errText is the one-line message of an error.
func errText(err error) string {
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae.Message
	}
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

// atoiField parses a positive integer form field; empty means default.
func atoiField(name, s string, lo, hi int) (*int, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		return nil, fmt.Errorf("%s %q: use a whole number from %d to %d", name, s, lo, hi)
	}
	return &n, nil
}
