package hostops

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
)

// StateDirsArgs asks for banger directories to exist, owned by the caller,
// mode 0700.
type StateDirsArgs struct {
	Dirs []string `json:"dirs"`
}

func addBaseOps(m map[string]opFunc) {
	m["ensure-state-dirs"] = opEnsureStateDirs
}

// EnsureStateDirs makes each directory (under the caller's roots) exist,
// owned by the caller with mode 0700.
func (c *Client) EnsureStateDirs(ctx context.Context, dirs ...string) error {
	return c.call(ctx, "ensure-state-dirs", StateDirsArgs{Dirs: dirs}, nil)
}

func opEnsureStateDirs(ctx context.Context, c Caller, raw json.RawMessage) (any, error) {
	var a StateDirsArgs
	if err := decode("ensure-state-dirs", raw, &a); err != nil {
		return nil, err
	}
	var clean []string
	for _, d := range a.Dirs {
		p, err := c.CheckPath(d)
		if err != nil {
			return nil, err
		}
		clean = append(clean, p)
	}
	for _, d := range clean {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("creating %s: %w", d, err)
		}
		fi, err := os.Lstat(d)
		if err != nil {
			return nil, fmt.Errorf("checking %s: %w", d, err)
		}
		if !fi.IsDir() {
			return nil, fmt.Errorf("%w: %s is not a directory", ErrRefused, d)
		}
		if err := os.Lchown(d, c.UID, c.GID); err != nil {
			return nil, fmt.Errorf("chowning %s to %d:%d: %w", d, c.UID, c.GID, err)
		}
		if err := os.Chmod(d, 0o700); err != nil {
			return nil, fmt.Errorf("chmod 0700 %s: %w", d, err)
		}
	}
	return nil, nil
}
