package storage

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// State is a VM's disk bookkeeping, written (through Options.Record)
// before and after each host step. The daemon persists it as JSON; this
// package owns the type and its encoding, and the store holds only the
// bytes, so storage imports nothing of the store.
type State struct {
	Driver   string   `json:"driver"`              // "dm" | "copy" | ""
	RootDisk string   `json:"root_disk,omitempty"` // what Firecracker opens (file path or /dev/mapper/banger-<id>)
	WorkDisk string   `json:"work_disk,omitempty"`
	COWPath  string   `json:"cow_path,omitempty"`
	Phase    string   `json:"phase,omitempty"`   // one of the Phase* constants
	Handles  []Handle `json:"handles,omitempty"` // in creation order
	// HomeChecked: the work disk's home was checked for a nested /root
	// (and repaired) once; later starts skip the check (RepairNestedRoot).
	HomeChecked bool `json:"home_checked,omitempty"`
}

// Handle is one host object a VM's storage holds.
type Handle struct {
	Kind    string `json:"kind"`              // KindLoop | KindDM
	Name    string `json:"name"`              // /dev/loopN or dm name
	Backing string `json:"backing,omitempty"` // loop backing file path
	Role    string `json:"role,omitempty"`    // RoleImage | RoleCOW | RoleOrigin | RoleSnapshot
	State   string `json:"state,omitempty"`   // StateIntended (written before the op) | StateDone (after)
}

// Clone returns a copy of st that shares no slice with it.
func (st State) Clone() State {
	st.Handles = append([]Handle(nil), st.Handles...)
	return st
}

// Encode is st as the JSON the daemon stores.
func (st State) Encode() ([]byte, error) {
	b, err := json.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("encoding storage state: %w", err)
	}
	return b, nil
}

// ParseState decodes stored JSON strictly: unknown fields are errors, so a
// state written by a newer build is not silently truncated. Empty input
// (and "{}") is the zero State: a VM with no disks yet.
func ParseState(b []byte) (State, error) {
	var st State
	text := strings.TrimSpace(string(b))
	if text == "" {
		return st, nil
	}
	dec := json.NewDecoder(strings.NewReader(text))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		return State{}, fmt.Errorf("decoding storage state: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return State{}, fmt.Errorf("decoding storage state: trailing data after the value")
	}
	return st, nil
}
