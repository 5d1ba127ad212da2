package hostops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
// owned by the caller with mode 0700. Missing components are made one at a
// time beneath the root's descriptor; an existing directory that is not the
// caller's, or a symlink anywhere on the way, is refused.
func (c *Client) EnsureStateDirs(ctx context.Context, dirs ...string) error {
	return c.call(ctx, "ensure-state-dirs", StateDirsArgs{Dirs: dirs}, nil)
}

func opEnsureStateDirs(ctx context.Context, c Caller, raw json.RawMessage) (any, error) {
	var a StateDirsArgs
	if err := decode("ensure-state-dirs", raw, &a); err != nil {
		return nil, err
	}
	cf := c.files()
	defer cf.Close()
	// Every path is checked before any is made.
	for _, d := range a.Dirs {
		if _, err := cf.rootOf(d); err != nil {
			return nil, err
		}
	}
	for _, d := range a.Dirs {
		if err := cf.mkdirAll(d, 0o700); err != nil {
			if errors.Is(err, ErrRefused) {
				return nil, err // names the path and the reason
			}
			return nil, fmt.Errorf("creating %s: %w", d, err)
		}
	}
	return nil, nil
}
