package hostops

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// pathFuncs are the functions that take a path string and resolve it
// themselves, following symlinks and racing renames: op code must reach a
// caller's files through internal/beneath instead.
var pathFuncs = map[string][]string{
	"os": {"Open", "OpenFile", "Create", "CreateTemp", "Mkdir", "MkdirAll", "MkdirTemp", "Remove", "RemoveAll",
		"Chmod", "Chown", "Lchown", "Chtimes", "Rename", "Link", "Symlink", "Readlink", "Truncate", "Stat", "Lstat",
		"ReadFile", "WriteFile", "ReadDir", "DirFS", "CopyFS", "Chdir"},
	"filepath": {"Walk", "WalkDir", "EvalSymlinks", "Glob"},
	"ioutil":   {"ReadFile", "WriteFile", "ReadDir", "TempDir", "TempFile"},
	"unix": {"Open", "Creat", "Chmod", "Chown", "Lchown", "Stat", "Lstat", "Mkdir", "Mknod", "Mkfifo", "Rmdir",
		"Unlink", "Rename", "Link", "Symlink", "Readlink", "Truncate", "Access", "Mount", "Unmount", "Statfs",
		"Utimes", "UtimesNano", "Chroot", "Chdir", "Setxattr", "Lsetxattr", "Removexattr"},
	"syscall": {"Open", "Creat", "Chmod", "Chown", "Lchown", "Stat", "Lstat", "Mkdir", "Mknod", "Rmdir",
		"Unlink", "Rename", "Link", "Symlink", "Readlink", "Truncate", "Access", "Mount", "Unmount", "Statfs",
		"Utimes", "Chroot", "Chdir"},
}

// allowedPathCalls are the path-based calls op code may make, keyed by
// "file:function:pkg.Func", each touching only a place the caller cannot
// write or a path the caller does not name. Anything else is an offender.
var allowedPathCalls = map[string]string{
	// Root-owned system places.
	"storage_ops.go:opDMCreateSnapshot:os.Stat":         "sysfs (/sys/module/dm_snapshot)",
	"image_ops.go:findDebootstrap:os.Stat":              "root-owned /usr/sbin, /sbin",
	"image_ops.go:DebianMirror:os.ReadFile":             "root-owned apt sources under /etc",
	"image_ops.go:trustedScripts:os.Stat":               "the helper's own root-owned scripts dir (rootOnly checked it)",
	"image_ops.go:trustedScripts:filepath.EvalSymlinks": "the helper's own binary (os.Executable)",
	"image_ops.go:rootOnly:os.Lstat":                    "checks the helper's root-owned scripts dir and its parents",
	"image_ops.go:opImageCustomize:os.ReadFile":         "the helper's own root-owned scripts dir",
	"resolver_ops.go:*":                                 "resolver files are root-owned /etc and /run paths",
	"storage_ops.go:openMapperNode:unix.Open":           "root-owned /dev, the base of an openat2 beneath it",
	// Root-owned 0700 staging that only these ops create.
	"image_ops.go:makeStaging:os.Mkdir":                       "root-owned staging under /var/tmp",
	"image_ops.go:makeStaging:os.WriteFile":                   "root-owned staging under /var/tmp",
	"image_ops.go:makeStaging:os.RemoveAll":                   "root-owned staging under /var/tmp",
	"image_ops.go:checkStaging:os.Lstat":                      "root-owned staging under /var/tmp (refused unless root's 0700 dir)",
	"image_ops.go:checkStaging:os.ReadFile":                   "root-owned staging under /var/tmp",
	"image_ops.go:opImageDebootstrap:os.RemoveAll":            "root-owned staging under /var/tmp",
	"image_ops.go:opImageRemoveStaging:os.RemoveAll":          "root-owned staging under /var/tmp",
	"image_ops.go:opImageCustomize:os.RemoveAll":              "root-owned staging tree",
	"image_ops.go:opImageCustomize:os.MkdirAll":               "root-owned staging tree",
	"image_ops.go:opImageCustomize:os.WriteFile":              "root-owned staging tree",
	"image_ops.go:copyFileFrom:os.OpenFile":                   "destination in the root-owned staging tree",
	"image_modules.go:copyModules:os.MkdirAll":                "destination in the root-owned staging tree",
	"image_modules.go:copyModules:os.OpenFile":                "destination in the root-owned staging tree",
	"storage_home_ops.go:opSeedWorkDisk:os.MkdirTemp":         "root-owned 0700 staging under os.TempDir",
	"storage_home_ops.go:opSeedWorkDisk:os.RemoveAll":         "root-owned 0700 staging under os.TempDir",
	"storage_home_ops.go:opSeedWorkDisk:os.Lstat":             "root-owned 0700 staging under os.TempDir",
	"storage_home_ops.go:opSeedWorkDisk:os.Mkdir":             "root-owned 0700 staging under os.TempDir",
	"storage_home_ops.go:opSeedWorkDisk:os.WriteFile":         "root-owned 0700 staging under os.TempDir",
	"storage_home_ops.go:restoreSpecialBits:filepath.WalkDir": "root-owned 0700 staging; WalkDir follows no symlink",
	"storage_home_ops.go:restoreSpecialBits:os.WriteFile":     "root-owned 0700 staging under os.TempDir",
	"storage_home_ops.go:restoreSpecialBits:os.OpenFile":      "root-owned 0700 staging under os.TempDir",
	"storage_home_ops.go:copyOut:os.Open":                     "the seed in the root-owned 0700 staging",
	"storage_fs.go:treeBytes:filepath.WalkDir":                "root-owned 0700 seed staging; WalkDir follows no symlink",
	// repair-nested-root (being replaced by a mount-free repair).
	"storage_home_ops.go:opRepairNestedRoot:os.MkdirTemp": "root-owned 0700 mount point under os.TempDir",
	"storage_home_ops.go:opRepairNestedRoot:os.Remove":    "root-owned 0700 mount point under os.TempDir",
	"storage_home_ops.go:opRepairNestedRoot:unix.Mount":   "root-owned 0700 mount point under os.TempDir",
	"storage_home_ops.go:unmount:unix.Unmount":            "root-owned 0700 mount point under os.TempDir",
	"storage_home_ops.go:flattenNested:os.OpenFile":       "the root-owned mount point",
	// Not op code: runs as the calling (unprivileged) process.
	"storage_fs.go:GrowFS:os.Open": "Client.GrowFS runs as the calling process, not as root",
	// internal/blockdev: sysfs, /proc and /dev/loop*.
	"blockdev/loop.go:OpenLoop:os.OpenFile":        "/dev/loopN (name checked)",
	"blockdev/loop.go:AttachLoop:os.OpenFile":      "/dev/loop-control and /dev/loopN",
	"blockdev/loop.go:LoopBackingName:os.ReadFile": "sysfs",
	"blockdev/loop.go:LoopsBackedBy:filepath.Glob": "sysfs",
	"blockdev/loop.go:LoopsBackedBy:os.ReadDir":    "sysfs",
	"blockdev/loop.go:SysInt:os.ReadFile":          "sysfs",
	"blockdev/dm.go:DMNode:filepath.Glob":          "sysfs",
	"blockdev/dm.go:DMNode:os.ReadFile":            "sysfs",
	"blockdev/dm.go:DevNum:os.ReadFile":            "sysfs",
	"blockdev/dm.go:DeviceAt:os.ReadFile":          "sysfs",
	"blockdev/dm.go:DeviceAt:os.Stat":              "sysfs",
	"blockdev/dm.go:Holders:os.ReadDir":            "sysfs",
	"blockdev/dm.go:Holders:os.ReadFile":           "sysfs and /proc",
	"blockdev/dm.go:Holders:filepath.Glob":         "/proc/*/fd",
	"blockdev/dm.go:Holders:os.Readlink":           "/proc/*/fd",
}

// TestOpsUseNoPathCalls fails when op code (internal/hostops and
// internal/blockdev, tests aside) calls a path-based file function that
// the allow-list above does not name with a reason.
func TestOpsUseNoPathCalls(t *testing.T) {
	var files []string
	for _, pattern := range []string{"*.go", "../blockdev/*.go"} {
		m, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	banned := map[string]bool{}
	for pkg, fns := range pathFuncs {
		for _, fn := range fns {
			banned[pkg+"."+fn] = true
		}
	}
	used := map[string]bool{}
	var offenders []string
	fset := token.NewFileSet()
	scanned := 0
	for _, path := range files {
		if strings.HasSuffix(path, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		scanned++
		name := filepath.Base(path)
		if strings.HasPrefix(path, "../") {
			name = filepath.Base(filepath.Dir(path)) + "/" + name
		}
		imports := map[string]string{} // local name -> last element of the import path
		for _, im := range f.Imports {
			p, _ := strconv.Unquote(im.Path.Value)
			local := filepath.Base(p)
			if im.Name != nil {
				local = im.Name.Name
			}
			imports[local] = filepath.Base(p)
		}
		for _, decl := range f.Decls {
			fn := "(top level)"
			if fd, ok := decl.(*ast.FuncDecl); ok {
				fn = fd.Name.Name
			}
			ast.Inspect(decl, func(n ast.Node) bool {
				sel, ok := n.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				id, ok := sel.X.(*ast.Ident)
				if !ok || imports[id.Name] == "" {
					return true
				}
				call := imports[id.Name] + "." + sel.Sel.Name
				if !banned[call] {
					return true
				}
				for _, key := range []string{name + ":" + fn + ":" + call, name + ":*"} {
					if allowedPathCalls[key] != "" {
						used[key] = true
						return true
					}
				}
				offenders = append(offenders, fmt.Sprintf("%s: %s in %s", fset.Position(sel.Pos()), call, fn))
				return true
			})
		}
	}
	if scanned < 8 {
		t.Fatalf("scanned only %d files; is the test running in internal/hostops?", scanned)
	}
	if len(offenders) > 0 {
		t.Errorf("path-based file calls in op code (resolve the caller's paths through internal/beneath, or allow-list a root-owned place with its reason):\n  %s",
			strings.Join(offenders, "\n  "))
	}
	var stale []string
	for key := range allowedPathCalls {
		if !used[key] {
			stale = append(stale, key)
		}
	}
	sort.Strings(stale)
	if len(stale) > 0 {
		t.Logf("allow-list entries that match nothing (remove them): %s", strings.Join(stale, ", "))
	}
}
