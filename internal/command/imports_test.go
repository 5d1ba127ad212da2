package command

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// execAllowed are the places that may still import os/exec, by path from
// the module root: a directory covers everything beneath it.
var execAllowed = map[string]string{
	"internal/command": "the one command runner",
	"internal/cli":     "terminal-attached children: ssh, the TUI's ssh, starting bangerd detached",
	"test":             "system tests drive the built binaries",
}

// TestOnlyCommandImportsOSExec keeps internal/command the one place that
// runs external programs: any other non-test Go file of the module that
// imports os/exec is listed with its line.
func TestOnlyCommandImportsOSExec(t *testing.T) {
	root := moduleRoot(t)
	var offenders []string
	used := map[string]bool{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			name := d.Name()
			if p != root && (strings.HasPrefix(name, ".") || name == "vendor" || name == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(rel, ".go") || strings.HasSuffix(rel, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, p, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		for _, imp := range f.Imports {
			if path, _ := strconv.Unquote(imp.Path.Value); path != "os/exec" {
				continue
			}
			if allow, ok := allowedBy(rel); ok {
				used[allow] = true
				continue
			}
			offenders = append(offenders, rel+":"+strconv.Itoa(fset.Position(imp.Pos()).Line))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(offenders)
	if len(offenders) > 0 {
		t.Errorf("os/exec is imported outside internal/command; run programs with command.Cmd, command.Run or command.Output instead:\n  %s",
			strings.Join(offenders, "\n  "))
	}
	for allow := range execAllowed {
		if strings.HasSuffix(allow, ".go") && !used[allow] {
			t.Errorf("%s no longer imports os/exec: remove its entry from execAllowed", allow)
		}
	}
}

// allowedBy is the execAllowed entry covering rel, if any.
func allowedBy(rel string) (string, bool) {
	for allow := range execAllowed {
		if rel == allow || strings.HasPrefix(rel, allow+"/") {
			return allow, true
		}
	}
	return "", false
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.HasPrefix(string(b), "module banger\n") {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod of module banger not found above the test's directory")
		}
		dir = parent
	}
}
