package cli

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
)

func (a *app) sshConfigCmd() *cobra.Command {
	var install bool
	cmd := &cobra.Command{
		Use:   "ssh-config",
		Short: "Print (or --install) an OpenSSH block so `ssh NAME.vm` works",
		Long: `Prints a "Host *.vm" block for OpenSSH: user root, the runtime bundle's key, banger's own
known_hosts file. With --install it writes the block to ~/.ssh/banger.conf and adds an Include
line for it at the top of ~/.ssh/config (once; the old file is kept as ~/.ssh/config.banger.bak).
NAME.vm must resolve on the host for ssh, scp and editors' remote-SSH to reach the VM.`,
		Example: `  banger ssh-config
  banger ssh-config --install`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			l, err := a.config()
			if err != nil {
				return err
			}
			block := renderSSHConfig(l.Config.SSHKeyPath, filepath.Join(l.Paths.StateDir, knownHostsName))
			if _, err := os.Stat(l.Config.SSHKeyPath); err != nil {
				fmt.Fprintf(a.stderr, "banger: warning: ssh key %s: %s; install the runtime bundle or set ssh_key_path\n", l.Config.SSHKeyPath, errMessage(err))
			}
			if !install {
				_, err := fmt.Fprint(a.stdout, block)
				return err
			}
			home := a.getenv("HOME")
			if home == "" {
				if home, err = os.UserHomeDir(); err != nil {
					return failf("finding your home directory for ~/.ssh: %v; set HOME", err)
				}
			}
			msgs, err := installSSHConfig(filepath.Join(home, ".ssh"), block)
			for _, m := range msgs {
				fmt.Fprintln(a.stdout, m)
			}
			if err != nil {
				return failf("%v", err)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&install, "install", false, "write ~/.ssh/banger.conf and Include it from ~/.ssh/config")
	return cmd
}

// renderSSHConfig is the `Host *.vm` block.
func renderSSHConfig(key, knownHosts string) string {
	return fmt.Sprintf(`# banger VMs: ssh NAME.vm (written by banger ssh-config)
Host *.vm
    User root
    IdentityFile %s
    IdentitiesOnly yes
    UserKnownHostsFile %s
    StrictHostKeyChecking accept-new
`, sshPathArg(key), sshPathArg(knownHosts))
}

// sshIncludeMarker precedes the Include line banger adds.
const sshIncludeMarker = "# added by banger ssh-config --install"

// installSSHConfig writes block to sshDir/banger.conf and makes sure
// sshDir/config includes it before any Host or Match line (an Include
// inside a Host block only applies to that block). It changes nothing
// that is already right, and returns one message per thing it did or
// found.
func installSSHConfig(sshDir, block string) ([]string, error) {
	var msgs []string
	if err := os.MkdirAll(sshDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating %s: %w", sshDir, err)
	}
	conf := filepath.Join(sshDir, "banger.conf")
	old, err := os.ReadFile(conf)
	switch {
	case err == nil && string(old) == block:
		msgs = append(msgs, conf+" is up to date")
	case err == nil || errors.Is(err, fs.ErrNotExist):
		if err := writeFileAtomic(conf, []byte(block), 0o600); err != nil {
			return msgs, err
		}
		msgs = append(msgs, "wrote "+conf)
	default:
		return msgs, fmt.Errorf("reading %s: %w", conf, err)
	}

	cfgPath := filepath.Join(sshDir, "config")
	if target, err := filepath.EvalSymlinks(cfgPath); err == nil {
		cfgPath = target // a dotfile manager's symlink stays a symlink
	}
	cfg, err := os.ReadFile(cfgPath)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return msgs, fmt.Errorf("reading %s: %w", cfgPath, err)
	}
	mode := fs.FileMode(0o600)
	if st, err := os.Stat(cfgPath); err == nil {
		mode = st.Mode().Perm()
	}
	found, scoped := findInclude(cfg, conf, sshDir)
	switch {
	case found && scoped:
		msgs = append(msgs, fmt.Sprintf("%s includes %s, but below a Host or Match line, so it only applies inside that block; move the Include line to the top", cfgPath, conf))
		return msgs, nil
	case found:
		msgs = append(msgs, cfgPath+" already includes "+conf)
		return msgs, nil
	}
	if cfg != nil {
		backup := cfgPath + ".banger.bak"
		if err := writeFileAtomic(backup, cfg, mode); err != nil {
			return msgs, err
		}
		msgs = append(msgs, "saved the previous "+cfgPath+" as "+backup)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s\nInclude %s\n", sshIncludeMarker, sshPathArg(conf))
	if len(cfg) > 0 {
		b.WriteString("\n")
		b.Write(cfg)
	}
	if err := writeFileAtomic(cfgPath, b.Bytes(), mode); err != nil {
		return msgs, err
	}
	msgs = append(msgs, "added `Include "+conf+"` at the top of "+cfgPath)
	return msgs, nil
}

// findInclude looks for an Include naming conf in an ssh_config and
// reports whether it sits below a Host or Match line.
func findInclude(cfg []byte, conf, sshDir string) (found, scoped bool) {
	names := map[string]bool{conf: true, "banger.conf": true, "~/.ssh/banger.conf": true}
	inBlock := false
	for _, line := range strings.Split(string(cfg), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		kw, rest := splitSSHKeyword(line)
		switch strings.ToLower(kw) {
		case "host", "match":
			inBlock = true
		case "include":
			for _, f := range strings.Fields(rest) {
				f = strings.Trim(f, `"`)
				if names[f] || filepath.Join(sshDir, f) == conf {
					return true, inBlock
				}
			}
		}
	}
	return false, false
}

// splitSSHKeyword splits "Keyword value" or "Keyword=value".
func splitSSHKeyword(line string) (string, string) {
	i := strings.IndexAny(line, " \t=")
	if i < 0 {
		return line, ""
	}
	rest := strings.TrimLeft(line[i:], " \t")
	rest = strings.TrimPrefix(rest, "=")
	return line[:i], strings.TrimSpace(rest)
}

// writeFileAtomic replaces path with data through a temporary file in the
// same directory.
func writeFileAtomic(path string, data []byte, mode fs.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(mode)
	}
	if err == nil {
		err = tmp.Close()
	} else {
		tmp.Close()
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
