//go:build !banger_front

package cli

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/firecracker"
	"banger/internal/tarcopy"
)

// guestHome is where a relative guest path starts (exec's default workdir).
const guestHome = "/root"

// cpSide is one argument of `vm cp`.
type cpSide struct {
	vm    string // "" for the host
	path  string
	stdio bool // "-": a tar on stdin or stdout
}

// parseCpSide reads docker's syntax: NAME:PATH is a VM's path when NAME
// has no "/" and does not start with "." (so ./a:b and /x:y are local).
func parseCpSide(s string) cpSide {
	if s == "-" {
		return cpSide{stdio: true}
	}
	if i := strings.IndexByte(s, ':'); i > 0 && !strings.Contains(s[:i], "/") && !strings.HasPrefix(s, ".") {
		return cpSide{vm: s[:i], path: s[i+1:]}
	}
	return cpSide{path: s}
}

// guestPath makes a guest path absolute (relative ones start at /root),
// keeping a trailing "/" or "/.".
func guestPath(p string) string {
	if strings.HasPrefix(p, "/") {
		return p
	}
	abs := path.Join(guestHome, p)
	switch {
	case p == "." || strings.HasSuffix(p, "/."):
		return abs + "/."
	case strings.HasSuffix(p, "/"):
		return abs + "/"
	}
	return abs
}

func (a *app) vmCpCmd() *cobra.Command {
	var quiet bool
	cmd := &cobra.Command{
		Use:   "cp SRC DST",
		Short: "Copy files and trees between the host and a running VM",
		Long: `Copies a file or a tree between the host and a running VM through its guest agent (a tar
stream over vsock; no SSH, no guest network), with docker cp's syntax: exactly one of SRC and
DST is VM:PATH (a relative guest path starts at /root). Modes, symlinks (copied as links, never
followed), mtimes and hard links are kept; owners too where the writing side is root (always in
the guest; on the host when banger runs as root).

Where the copy lands, as docker cp: onto an existing directory it goes inside it; onto a
missing path whose parent exists it takes that name; a file replaces a file; SRC ending in
/. copies a directory's contents. Extraction stays beneath the destination: an entry through a
symlink that points outside is refused.

"-" as SRC reads a tar from stdin and extracts it into the guest directory DST; "-" as DST
writes the tar of the guest's SRC to stdout. On a terminal, copies of more than a few MiB show
a progress line on stderr (--quiet: none).`,
		Example: `  banger vm cp dev:/root/notes.txt .
  banger vm cp ./src dev:/root/
  banger vm cp dev:project/. ./project-copy
  tar -C site -c . | banger vm cp - dev:/var/www
  banger vm cp dev:/var/log - | tar -t`,
		Args: cpArgs,
		RunE: func(c *cobra.Command, args []string) error {
			return a.runCp(c.Context(), c.InOrStdin(), parseCpSide(args[0]), parseCpSide(args[1]), quiet)
		},
		ValidArgsFunction: a.completeCp,
	}
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print no progress line")
	return cmd
}

// cpArgs checks the two sides before anything is contacted.
func cpArgs(c *cobra.Command, args []string) error {
	if len(args) != 2 {
		return bareUsagef("banger vm cp: needs SRC and DST, one of them VM:PATH, e.g. `banger vm cp dev:/root/notes.txt .` (see `banger vm cp --help`)")
	}
	src, dst := parseCpSide(args[0]), parseCpSide(args[1])
	switch {
	case src.vm != "" && dst.vm != "":
		return usageErrorf("vm cp copies between the host and one VM; make SRC or DST a local path (got %s and %s)", args[0], args[1])
	case src.vm == "" && dst.vm == "":
		return usageErrorf("vm cp needs one side as VM:PATH, e.g. `banger vm cp dev:/root/notes.txt .` (got %s and %s)", args[0], args[1])
	case src.vm != "" && src.path == "", dst.vm != "" && dst.path == "":
		vm := src.vm + dst.vm
		return usageErrorf("vm cp: give a guest path after %s:, e.g. %s:/root/", vm, vm)
	case src.stdio && dst.vm == "", dst.stdio && src.vm == "":
		return usageErrorf("vm cp: - (a tar on stdin or stdout) needs the other side to be VM:PATH")
	}
	if src.vm == "" && !src.stdio {
		if _, err := os.Lstat(src.path); err != nil {
			return usageErrorf("vm cp: %s", localErr(src.path, err))
		}
	}
	if dst.vm == "" && !dst.stdio {
		if err := checkLocalDst(dst.path); err != nil {
			return err
		}
	}
	return nil
}

// checkLocalDst refuses a destination that cannot exist (its parent is
// missing), before the copy starts.
func checkLocalDst(p string) error {
	clean := filepath.Clean(p)
	if _, err := os.Stat(clean); err == nil || !errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if parent := filepath.Dir(clean); !isDir(parent) {
		return usageErrorf("vm cp: %s does not exist (its parent %s must be an existing directory)", clean, parent)
	}
	return nil
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

func localErr(p string, err error) string {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "no such file or directory: " + p
	case errors.Is(err, fs.ErrPermission):
		return "permission denied: " + p
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return p + ": " + pe.Err.Error()
	}
	return err.Error()
}

func (a *app) runCp(ctx context.Context, stdin io.Reader, src, dst cpSide, quiet bool) error {
	ref := src.vm + dst.vm
	cc, err := a.cpClient(ctx, ref)
	if err != nil {
		return err
	}
	prog := a.newCopyProgress(quiet)
	defer prog.finish()
	if src.vm != "" {
		return a.cpFromGuest(ctx, cc, ref, guestPath(src.path), dst, prog)
	}
	return a.cpToGuest(ctx, cc, stdin, src, ref, guestPath(dst.path), prog)
}

// cpClient resolves the VM through vm.exec (it must be running; the copy
// counts as use) and returns a copy client dialing its agent directly.
func (a *app) cpClient(ctx context.Context, ref string) (*agent.CopyClient, error) {
	cl, err := a.client(ctx)
	if err != nil {
		return nil, failf("%s", errMessage(err))
	}
	var target api.ExecTarget
	if err := cl.Call(ctx, api.MethodVMExec, api.VMRef{Ref: ref}, &target); err != nil {
		// An agent older than exec is older than cp too.
		return nil, failf("%s", strings.Replace(errMessage(err), "(it has no exec)", "(it has no cp)", 1))
	}
	if target.Protocol < agent.ProtocolCopy {
		return nil, failf("%s", oldAgentCp(target.VM.Image))
	}
	return agent.NewCopyClient(func(ctx context.Context) (net.Conn, error) {
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		conn, err := firecracker.DialVsock(dctx, target.VsockPath, target.AgentPort)
		if err != nil {
			return nil, fmt.Errorf("reaching the agent in vm %s: %s", target.VM.Name, errMessage(err))
		}
		return conn, nil
	}), nil
}

// oldAgentCp is the daemon's oldAgentMessage for cp.
func oldAgentCp(image string) string {
	return fmt.Sprintf("the agent in image %s is older than this banger (it has no cp); rebuild the image with `banger image build debian --name %s` (delete the old one first) and re-create the VM", image, image)
}

func (a *app) cpFromGuest(ctx context.Context, cc *agent.CopyClient, vm, from string, dst cpSide, prog *copyProgress) error {
	out, err := cc.Out(ctx, from)
	if err != nil {
		return cpAgentErr(vm, err)
	}
	r := prog.reader(out)
	if dst.stdio {
		_, err := io.Copy(a.stdout, r)
		if cerr := out.Close(); cerr != nil {
			return cpAgentErr(vm, cerr)
		}
		if err != nil {
			return failf("vm cp: writing the tar to stdout: %s", errMessage(err))
		}
		return nil
	}
	hdr, replay, err := tarcopy.Peek(r)
	if err != nil {
		if cerr := out.Close(); cerr != nil {
			return cpAgentErr(vm, cerr)
		}
		return failf("vm cp: reading from vm %s: %s", vm, errMessage(err))
	}
	target, err := tarcopy.Resolve(dst.path, tarcopy.TopName(hdr), hdr.Typeflag == tar.TypeDir)
	if err != nil {
		out.Abort()
		return usageErrorf("vm cp: %s", errMessage(err))
	}
	_, err = tarcopy.Extract(replay, target, tarcopy.Options{Owners: os.Geteuid() == 0})
	// The agent's own failure explains a truncated stream best.
	if cerr := out.Close(); cerr != nil {
		return cpAgentErr(vm, cerr)
	}
	var ue *tarcopy.UserError
	switch {
	case errors.As(err, &ue):
		return failf("vm cp: %s", ue.Msg)
	case err != nil:
		return failf("vm cp: copying from vm %s: %s", vm, errMessage(err))
	}
	return nil
}

func (a *app) cpToGuest(ctx context.Context, cc *agent.CopyClient, stdin io.Reader, src cpSide, vm, to string, prog *copyProgress) error {
	if src.stdio {
		_, err := cc.In(ctx, agent.CopyIn{Path: to, Raw: true}, prog.reader(stdin))
		return cpAgentErr(vm, err)
	}
	fi, err := os.Lstat(src.path)
	if err != nil {
		return usageErrorf("vm cp: %s", localErr(src.path, err))
	}
	pr, pw := io.Pipe()
	werr := make(chan error, 1)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		err := tarcopy.Write(wctx, pw, src.path)
		pw.CloseWithError(err)
		werr <- err
	}()
	_, err = cc.In(ctx, agent.CopyIn{Path: to, Name: tarcopy.SourceName(src.path), Dir: fi.IsDir()}, prog.reader(pr))
	pr.CloseWithError(errCopyEnded)
	cancel()
	// A local read failure (an unreadable file) is what cut the stream.
	if e := <-werr; e != nil && !errors.Is(e, context.Canceled) && !errors.Is(e, errCopyEnded) {
		return failf("vm cp: archiving %s: %s", src.path, localErr(src.path, e))
	}
	return cpAgentErr(vm, err)
}

// errCopyEnded stops the archive writer once the agent answered.
var errCopyEnded = errors.New("the copy ended")

// cpAgentErr turns an agent failure into one line: the guest's refusals
// before anything was written (no such path, not a directory: 400, 404)
// exit 2, other failures (409: an entry refused mid-copy) 1.
func cpAgentErr(vm string, err error) error {
	if err == nil {
		return nil
	}
	var ce *agent.CopyError
	if errors.As(err, &ce) {
		if ce.Status == http.StatusBadRequest || ce.Status == http.StatusNotFound {
			return usageErrorf("vm cp: %s", ce.Msg)
		}
		return failf("vm cp: %s", ce.Msg)
	}
	if errors.Is(err, agent.ErrCopyUnsupported) {
		return failf("vm cp: the agent in vm %s has no cp; rebuild its image", vm)
	}
	return failf("vm cp: %s", errMessage(err))
}
