package tui

import (
	"fmt"
	"os"
	"strings"

	tea "charm.land/bubbletea/v2"

	"banger/internal/api"
)

// createForm is the small create form: name, image, vcpu, memory.
type createForm struct {
	fields []lineInput
	labels []string
	cur    int
}

func newCreateForm() createForm {
	f := createForm{labels: []string{"name", "image", "vcpu", "memory MiB"}}
	for _, ph := range []string{"generated when empty", "default image", "default", "default"} {
		f.fields = append(f.fields, lineInput{placeholder: ph, limit: 63})
	}
	return f
}

func (f *createForm) reset() {
	for i := range f.fields {
		f.fields[i].SetValue("")
		f.fields[i].Blur()
	}
	f.cur = 0
}

func (f *createForm) focus() tea.Cmd {
	for i := range f.fields {
		f.fields[i].Blur()
	}
	f.fields[f.cur].Focus()
	return nil
}

func (f *createForm) last() bool { return f.cur == len(f.fields)-1 }

func (f *createForm) next() tea.Cmd {
	f.cur = (f.cur + 1) % len(f.fields)
	return f.focus()
}

func (f *createForm) prev() tea.Cmd {
	f.cur = (f.cur + len(f.fields) - 1) % len(f.fields)
	return f.focus()
}

func (f *createForm) update(msg tea.Msg) tea.Cmd {
	if k, ok := msg.(tea.KeyPressMsg); ok {
		switch k.String() {
		case "tab", "down":
			return f.next()
		case "shift+tab", "up":
			return f.prev()
		}
	}
	f.fields[f.cur].update(msg)
	return nil
}

// params validates the form into vm.create params.
func (f *createForm) params() (api.VMCreateParams, error) {
	var p api.VMCreateParams
	p.Name = strings.TrimSpace(f.fields[0].Value())
	if p.Name != "" && !api.ValidName(p.Name) {
		return p, fmt.Errorf("name %q is not a DNS label: use lowercase letters, digits and inner hyphens", p.Name)
	}
	p.Image = strings.TrimSpace(f.fields[1].Value())
	var err error
	if p.VCPU, err = atoiField("vcpu", f.fields[2].Value(), 1, 32); err != nil {
		return p, err
	}
	if p.MemoryMiB, err = atoiField("memory", f.fields[3].Value(), 128, 1<<20); err != nil {
		return p, err
	}
	return p, nil
}

func (f *createForm) view(st styles, noColor bool) []string {
	lines := []string{st.title.Render("create a vm") + "  (tab next field, enter on the last to create, esc cancel)"}
	for i, in := range f.fields {
		marker := "  "
		if i == f.cur {
			marker = "> "
		}
		lines = append(lines, fmt.Sprintf("%s%-11s %s", marker, f.labels[i], in.view(st, noColor)))
	}
	return lines
}

// tailFile returns the last lines of at most max bytes of a file.
func tailFile(path string, maxBytes int64) ([]string, error) {
	fh, err := os.Open(path)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, fmt.Errorf("no console log yet")
		}
		return nil, fmt.Errorf("reading console log: %w", err)
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading console log: %w", err)
	}
	off := max(0, fi.Size()-maxBytes)
	buf := make([]byte, fi.Size()-off)
	if _, err := fh.ReadAt(buf, off); err != nil {
		return nil, fmt.Errorf("reading console log: %w", err)
	}
	text := strings.ReplaceAll(string(buf), "\r", "")
	lines := strings.Split(strings.TrimRight(text, "\n \t"), "\n")
	if off > 0 && len(lines) > 1 {
		lines = lines[1:] // the first line is cut
	}
	if len(lines) == 1 && lines[0] == "" {
		return nil, nil
	}
	return lines, nil
}
