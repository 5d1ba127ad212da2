package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/config"
)

// vm start (with --cold) and vm suspend; vm pause and vm resume are plain
// batch commands (vm.go).

func (a *app) vmStartCmd() *cobra.Command {
	var cold bool
	cmd := a.vmBatchCmdWith("start", "Start stopped VMs, restore suspended ones (waits until each is healthy)", api.MethodVMStart,
		func(id string) any { return api.VMStartParams{Ref: id, Cold: cold} })
	cmd.Example += "\n  banger vm start --cold dev   # a suspended VM: discard its snapshot and boot afresh"
	cmd.Flags().BoolVar(&cold, "cold", false, "discard a suspended VM's snapshot (its memory state is lost) and boot afresh")
	return cmd
}

func (a *app) vmSuspendCmd() *cobra.Command {
	cmd := a.vmBatchCmd("suspend", "Suspend VMs to a snapshot on disk, freeing their memory (vm start restores them)", api.MethodVMSuspend)
	return cmd
}

// stateLabel is the state column of vm list: a suspended VM shows what its
// snapshot takes on disk.
func stateLabel(v api.VM) string {
	if v.Snapshot != nil {
		return fmt.Sprintf("%s (%s)", v.State, config.FormatSize(v.Snapshot.DiskBytes))
	}
	return v.State
}

// snapshotLabel is vm show's snapshot row.
func snapshotLabel(s *api.Snapshot, now time.Time) string {
	out := fmt.Sprintf("%s on disk", config.FormatSize(s.DiskBytes))
	if s.MemoryBytes > 0 {
		out += fmt.Sprintf(" (guest memory %s)", config.FormatSize(s.MemoryBytes))
	}
	if s.Firecracker != "" {
		out += ", Firecracker v" + s.Firecracker
	}
	if !s.CreatedAt.IsZero() {
		out += ", made " + ago(s.CreatedAt, now)
	}
	return out
}
