// The nested-/root repair of a work disk, in userspace.

package ext4

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
)

// NestedHomeMarkers are entries whose presence in a top-level root/
// directory marks a home one level too deep (DESIGN.md §7).
var NestedHomeMarkers = []string{".bashrc", ".profile", ".ssh", ".bash_profile", ".bash_logout", ".bash_history"}

const (
	flagImmutable = 0x10   // EXT4_IMMUTABLE_FL
	flagAppend    = 0x20   // EXT4_APPEND_FL
	flagIndex     = 0x1000 // EXT4_INDEX_FL: an htree directory
	maxNameLen    = 255
)

// move is one planned entry move out of root/.
type move struct {
	from, to string
	inode    uint64
}

// RepairNestedHome flattens the work disk image at disk when its home sits
// one level too deep: a top-level directory root/ holding one of
// NestedHomeMarkers. Every entry of root/ moves up, in byte order of
// names; a name already taken at the top goes to NAME.nested (then
// NAME.nested.2, ...). root/'s owner and mode become the filesystem
// root's, which the guest mounts on /root, and the emptied root/ goes. It
// returns what moved ("root/NAME -> TARGET", then a line for root/
// itself), nothing when the layout is fine (no root/, root/ not a
// directory, or no marker in it).
//
// The image file is edited with debugfs (links made and removed, the
// root inode's owner and mode set), then e2fsck -fy repoints the ".." of
// moved directories and fixes link counts. All of it runs as the current
// process on a file it can write; the image is never mounted, so nothing
// in it (setuid files, device nodes, a crafted superblock) reaches the
// host kernel. The disk must not be in use (its VM stopped).
func RepairNestedHome(ctx context.Context, disk string) ([]string, error) {
	f, err := os.Open(disk)
	if err != nil {
		return nil, err
	}
	sb, err := readSuper(f)
	f.Close()
	if err != nil {
		return nil, err
	}
	blockSize := int(sb.blockSize)
	top, err := List(ctx, disk, "/")
	if err != nil {
		return nil, err
	}
	i := slices.IndexFunc(top, func(d Dirent) bool { return d.Name == "root" })
	if i < 0 || !top[i].IsDir() {
		return nil, nil
	}
	nested := top[i]
	inner, err := List(ctx, disk, "/root")
	if err != nil {
		return nil, err
	}
	if !slices.ContainsFunc(inner, func(d Dirent) bool { return slices.Contains(NestedHomeMarkers, d.Name) }) {
		return nil, nil
	}
	var topFlags uint64
	for _, p := range []string{"/root", "/"} {
		fl, err := inodeFlags(ctx, disk, p)
		if err != nil {
			return nil, err
		}
		if fl&(flagImmutable|flagAppend) != 0 {
			return nil, fmt.Errorf("%s in the image is immutable or append-only (flags 0x%x); clear it with `chattr -ia` in the guest", p, fl)
		}
		topFlags = fl
	}
	plan, err := planMoves(top, inner)
	if err != nil {
		return nil, err
	}
	perm := nested.Mode & 0o7777
	var script strings.Builder
	// debugfs ln adds to a linear directory only where a block has room:
	// grow it first by enough blocks for every new entry. An htree
	// directory grows itself (and an extra block would break its index).
	if topFlags&flagIndex == 0 {
		need := 0
		for _, m := range plan {
			need += (8 + len(m.to) + 3) &^ 3
		}
		for n := (need + blockSize - 1) / blockSize; n > 0; n-- {
			script.WriteString("expand_dir /\n")
		}
	}
	for _, m := range plan {
		fmt.Fprintf(&script, "ln %s %s\nunlink %s\n", quote("/root/"+m.from), quote("/"+m.to), quote("/root/"+m.from))
	}
	// The nested directory was the real home: its owner and mode become the
	// filesystem root's, which the guest mounts on /root.
	fmt.Fprintf(&script, "sif / mode 0%o\nsif / uid %d\nsif / gid %d\nrmdir /root\n", 0o40000|perm, nested.UID, nested.GID)
	_, werr := debugfs(ctx, disk, true, script.String())
	if werr == nil {
		werr = checkMoved(ctx, disk, plan)
	}
	// Whatever debugfs managed, e2fsck settles the ".." entries and link
	// counts, so a half-done repair still leaves a consistent filesystem.
	ferr := Fsck(ctx, disk)
	if werr != nil {
		return nil, fmt.Errorf("moving root/ up: %w", werr)
	}
	if ferr != nil {
		return nil, fmt.Errorf("checking the flattened filesystem: %w", ferr)
	}
	moves := make([]string, 0, len(plan)+1)
	for _, m := range plan {
		moves = append(moves, fmt.Sprintf("root/%s -> %s", m.from, m.to))
	}
	moves = append(moves, fmt.Sprintf("removed empty root/ (owner %d:%d, mode %04o kept on the disk's root)", nested.UID, nested.GID, perm))
	return moves, nil
}

// planMoves picks the target of every entry of root/ (inner), in name
// order, against the names at the top and those taken by earlier moves.
func planMoves(top, inner []Dirent) ([]move, error) {
	taken := map[string]bool{}
	for _, d := range top {
		taken[d.Name] = true
	}
	inner = slices.Clone(inner)
	slices.SortFunc(inner, func(a, b Dirent) int { return strings.Compare(a.Name, b.Name) })
	var plan []move
	for _, d := range inner {
		if d.Name == "." || d.Name == ".." {
			continue
		}
		if !quotable(d.Name) {
			return nil, fmt.Errorf("root/%q has a newline in its name, which debugfs cannot address; rename it in the guest", d.Name)
		}
		target := d.Name
		for i := 0; taken[target]; i++ {
			target = d.Name + ".nested"
			if i > 0 {
				target = fmt.Sprintf("%s.nested.%d", d.Name, i+1)
			}
		}
		if len(target) > maxNameLen {
			return nil, fmt.Errorf("root/%s cannot move up: %s is taken and %s is over %d bytes", d.Name, d.Name, target, maxNameLen)
		}
		taken[target] = true
		plan = append(plan, move{from: d.Name, to: target, inode: d.Inode})
	}
	return plan, nil
}

// checkMoved confirms the top of the image now holds every planned target
// as a link to the moved inode, and no root/.
func checkMoved(ctx context.Context, disk string, plan []move) error {
	top, err := List(ctx, disk, "/")
	if err != nil {
		return err
	}
	have := map[string]uint64{}
	for _, d := range top {
		have[d.Name] = d.Inode
	}
	if _, ok := have["root"]; ok {
		return fmt.Errorf("root/ is still there after the moves")
	}
	for _, m := range plan {
		if have[m.to] != m.inode {
			return fmt.Errorf("root/%s did not arrive at %s", m.from, m.to)
		}
	}
	return nil
}
