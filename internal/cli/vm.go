package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/client"
	"banger/internal/config"
)

func (a *app) addVMCommands(root *cobra.Command) {
	if !a.wants("vm", "vms") {
		return
	}
	vm := &cobra.Command{
		Use:     "vm",
		Short:   "Create, run and manage VMs",
		Aliases: []string{"vms"},
	}
	del := a.vmBatchCmd("delete", "Delete VMs and their disks (stops them first)", api.MethodVMDelete)
	del.Aliases = []string{"rm"}
	del.SuggestFor = []string{"remove", "destroy"}
	vm.AddCommand(
		a.vmCreateCmd(),
		a.vmStartCmd(),
		a.vmBatchCmd("stop", "Stop VMs gracefully (Ctrl-Alt-Del, forced after stop_grace)", api.MethodVMStop),
		a.vmBatchCmd("restart", "Stop and start VMs", api.MethodVMRestart),
		a.vmKillCmd(),
		a.vmBatchCmd("pause", "Pause VMs' vCPUs (the process, DNS name and forwards stay)", api.MethodVMPause),
		a.vmBatchCmd("resume", "Resume paused VMs", api.MethodVMResume),
		a.vmSuspendCmd(),
		del,
		a.vmSetCmd(),
		a.vmListCmd(),
		a.vmShowCmd(),
		a.vmStatsCmd(),
		a.vmHealthCmd(),
		a.vmLogsCmd(),
		a.vmPortsCmd(),
	)
	root.AddCommand(vm)
}

func (a *app) vmCreateCmd() *cobra.Command {
	var p api.VMCreateParams
	var vcpu int
	var mem string
	var quiet, jsonOut bool
	cmd := &cobra.Command{
		Use:   "create [NAME]",
		Short: "Create a VM and start it (unless --no-start)",
		Example: `  banger vm create dev
  banger vm create --vcpu 4 --memory 4G --nat build
  banger vm create --no-start scratch
  banger vm create --publish 8080:80 web`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if len(args) == 1 {
				if p.Name != "" && p.Name != args[0] {
					return usageErrorf("name given twice (%q and --name %q); give one", args[0], p.Name)
				}
				p.Name = args[0]
			}
			if err := validateName(p.Name); err != nil {
				return err
			}
			var err error
			if p.VCPU, p.MemoryMiB, err = sizingFlags(c, vcpu, mem); err != nil {
				return err
			}
			if err := checkPublish(p.Publish, nil); err != nil {
				return err
			}
			for flag, v := range map[string]string{"--disk-size": p.DiskSize, "--work-disk-size": p.WorkDiskSize} {
				if v == "" {
					continue
				}
				if _, err := config.ParseSize(v); err != nil {
					return usageErrorf("%s %q: %v (use e.g. 8G or 512M)", flag, v, err)
				}
			}
			cl, err := a.client(c.Context())
			if err != nil {
				return err
			}
			stopProgress := a.showProgress(c.Context(), cl, quiet || jsonOut, []string{p.Name})
			var res api.VMResult
			err = cl.Call(c.Context(), api.MethodVMCreate, p, &res)
			stopProgress(res.VM.ID) // a generated name is known only now
			if err != nil {
				return err
			}
			if jsonOut {
				if err := writeJSON(a.stdout, res); err != nil {
					return err
				}
			} else {
				a.printStarted(res, "created")
				a.printForwards(res.VM)
			}
			if res.Health != nil && !res.Health.Healthy {
				return &silentExit{code: ExitFailed}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&p.Name, "name", "", "VM name (a DNS label; generated when omitted)")
	f.StringVar(&p.Image, "image", "", "image name (default: default_image_name)")
	f.IntVar(&vcpu, "vcpu", 0, "vCPUs, 1-32 (default: default_vcpu)")
	f.StringVar(&mem, "memory", "", "memory: a size such as 4G or 512M, or a number of MiB; >= 128 MiB (default: default_memory_mib)")
	f.StringVar(&p.DiskSize, "disk-size", "", "root disk size, e.g. 8G (default: default_disk_size)")
	f.StringVar(&p.WorkDiskSize, "work-disk-size", "", "work disk (/root) size, e.g. 16G (default: default_work_disk_size)")
	f.BoolVar(&p.NAT, "nat", false, "give the VM outbound network through NAT")
	f.BoolVar(&p.NoStart, "no-start", false, "create without starting")
	f.StringArrayVarP(&p.Publish, "publish", "p", nil, "forward host [ADDR:]HOST to guest port GUEST while it runs, e.g. 8080:80 (repeatable)")
	f.BoolVarP(&quiet, "quiet", "q", false, "print only the result")
	f.BoolVar(&jsonOut, "json", false, "print the result as JSON")
	addCPUsAlias(cmd)
	a.showDefaults(cmd)
	return cmd
}

// showDefaults puts the effective defaults into --help. Loading the
// configuration is left until help is asked for (run), so plain commands
// that never read it do not pay for it at start.
func (a *app) showDefaults(cmd *cobra.Command) {
	a.defaultsHelp = append(a.defaultsHelp, cmd)
}

func (a *app) applyDefaultsHelp(cmd *cobra.Command) {
	l, err := a.config()
	if err != nil {
		return
	}
	c := l.Config
	set := func(name, def string) {
		if fl := cmd.Flags().Lookup(name); fl != nil {
			fl.Usage = strings.Replace(fl.Usage, "(default: ", "(default "+def+" from ", 1)
		}
	}
	set("image", c.DefaultImageName)
	set("vcpu", fmt.Sprint(c.DefaultVCPU))
	set("memory", fmt.Sprint(c.DefaultMemoryMiB))
	set("disk-size", config.FormatSize(c.DefaultDiskSize))
	set("work-disk-size", config.FormatSize(c.DefaultWorkDiskSize))
}

func (a *app) printStarted(res api.VMResult, verb string) {
	vm := res.VM
	line := fmt.Sprintf("%s %s (%s) %s, ip %s", verb, vm.Name, vm.ID, vm.State, vm.IP)
	if vm.DNSName != "" && vm.State == api.StateRunning {
		line += ", " + vm.DNSName
	}
	fmt.Fprintln(a.stdout, line)
	for _, n := range res.Notices {
		fmt.Fprintf(a.stderr, "banger: %s\n", n)
	}
	if h := res.Health; h != nil {
		if h.Healthy {
			fmt.Fprintf(a.stdout, "%s is healthy (agent answered in %.1f ms); connect with: banger vm ssh %s\n", vm.Name, h.RTTMillis, vm.Name)
		} else if h.State == "" || h.State == api.StateRunning {
			fmt.Fprintf(a.stderr, "banger: %s is running but unhealthy: %s\n", vm.Name, h.Reason)
		} else {
			fmt.Fprintf(a.stderr, "banger: %s is %s: %s\n", vm.Name, h.State, h.Reason)
		}
	}
}

// progress prints create/start stages from the event stream until stop is
// called. It prints nothing when quiet.
func (a *app) progress(ctx context.Context, cl *client.Client, quiet bool, name string) func() {
	stop := a.showProgress(ctx, cl, quiet, []string{name})
	return func() { stop() }
}

func (a *app) vmBatchCmd(verb, short, method string) *cobra.Command {
	return a.vmBatchCmdWith(verb, short, method, func(id string) any { return api.VMRef{Ref: id} })
}

// vmBatchCmdWith is vmBatchCmd whose params for each VM come from params.
func (a *app) vmBatchCmdWith(verb, short, method string, params func(id string) any) *cobra.Command {
	var jsonOut bool
	cmd := &cobra.Command{
		Use:     verb + " VM...",
		Short:   short,
		Example: fmt.Sprintf("  banger vm %s dev\n  banger vm %s a b c", verb, verb),
		Args:    cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, refs []string) error {
			cl, err := a.client(c.Context())
			if err != nil {
				return err
			}
			outs, err := fanOut(c.Context(), cl, refs, func(ctx context.Context, vm api.VM) (api.VMResult, error) {
				var res api.VMResult
				err := cl.Call(ctx, method, params(vm.ID), &res)
				return res, err
			})
			if err != nil {
				return err
			}
			return a.reportBatch(outs, verb, jsonOut)
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print results as JSON")
	return cmd
}

// reportBatch prints each outcome in order and exits non-zero if any failed
// or a started VM is unhealthy.
func (a *app) reportBatch(outs []outcome[api.VMResult], verb string, jsonOut bool) error {
	failed := 0
	type jsonOutcome struct {
		Ref    string        `json:"ref"`
		OK     bool          `json:"ok"`
		Error  string        `json:"error,omitempty"`
		Result *api.VMResult `json:"result,omitempty"`
	}
	var js []jsonOutcome
	for _, o := range outs {
		if o.err != nil {
			failed++
			if jsonOut {
				js = append(js, jsonOutcome{Ref: o.ref, Error: errMessage(o.err)})
			} else {
				fmt.Fprintf(a.stderr, "banger: %s: %s\n", o.label(), errMessage(o.err))
			}
			continue
		}
		res := o.val
		unhealthy := res.Health != nil && !res.Health.Healthy
		if unhealthy {
			failed++
		}
		if jsonOut {
			r := res
			js = append(js, jsonOutcome{Ref: o.ref, OK: !unhealthy, Result: &r})
			continue
		}
		switch verb {
		case "start", "restart":
			a.printStarted(res, pastTense(verb))
		default:
			done := pastTense(verb)
			if verb == "kill" && res.VM.State == api.StateRunning {
				done = "signalled" // the signal did not end it (CONT, STOP, ...)
			}
			fmt.Fprintf(a.stdout, "%s %s\n", done, o.label())
			for _, n := range res.Notices {
				fmt.Fprintf(a.stderr, "banger: %s: %s\n", o.label(), n)
			}
		}
	}
	if jsonOut {
		if err := writeJSON(a.stdout, js); err != nil {
			return err
		}
	}
	if failed > 0 {
		return &silentExit{code: ExitFailed}
	}
	return nil
}

func errMessage(err error) string {
	_, msg := classify(err)
	return msg
}

func pastTense(verb string) string {
	switch verb {
	case "stop":
		return "stopped"
	case "start":
		return "started"
	case "restart":
		return "restarted"
	case "kill":
		return "killed"
	case "delete":
		return "deleted"
	case "set":
		return "updated"
	case "pause", "resume":
		return verb + "d"
	case "suspend":
		return "suspended"
	}
	return verb + "ed"
}

func (a *app) vmKillCmd() *cobra.Command {
	var sig string
	var jsonOut bool
	cmd := &cobra.Command{
		Use:     "kill VM...",
		Short:   "Kill VMs' Firecracker processes (default SIGKILL), then clean up",
		Example: "  banger vm kill dev\n  banger vm kill --signal TERM a b",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, refs []string) error {
			cl, err := a.client(c.Context())
			if err != nil {
				return err
			}
			outs, err := fanOut(c.Context(), cl, refs, func(ctx context.Context, vm api.VM) (api.VMResult, error) {
				var res api.VMResult
				err := cl.Call(ctx, api.MethodVMKill, api.VMKillParams{Ref: vm.ID, Signal: sig}, &res)
				return res, err
			})
			if err != nil {
				return err
			}
			return a.reportBatch(outs, "kill", jsonOut)
		},
	}
	cmd.Flags().StringVarP(&sig, "signal", "s", "KILL", "signal to send (KILL, TERM, INT, ...)")
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print results as JSON")
	return cmd
}

func (a *app) vmSetCmd() *cobra.Command {
	var vcpu int
	var mem string
	var nat, noNAT, jsonOut bool
	var work string
	var publish, unpublish []string
	var discard bool
	cmd := &cobra.Command{
		Use:   "set VM...",
		Short: "Change VMs' settings (vCPU and memory apply at the next start; NAT applies at once)",
		Example: `  banger vm set dev --vcpu 4 --memory 8G
  banger vm set a b --nat
  banger vm set dev --work-disk-size 32G   # stopped VMs only; grows, never shrinks
  banger vm set dev --publish 8080:80 --unpublish 9000`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, refs []string) error {
			base := api.VMSetParams{Publish: publish, Unpublish: unpublish}
			var err error
			if base.VCPU, base.MemoryMiB, err = sizingFlags(c, vcpu, mem); err != nil {
				return err
			}
			if nat && noNAT {
				return usageErrorf("--nat and --no-nat contradict each other; give one")
			}
			if nat || noNAT {
				v := nat
				base.NAT = &v
			}
			if work != "" {
				if _, err := config.ParseSize(work); err != nil {
					return usageErrorf("--work-disk-size %q: %v (use e.g. 32G)", work, err)
				}
				base.WorkDiskSize = work
			}
			if err := checkPublish(base.Publish, base.Unpublish); err != nil {
				return err
			}
			base.DiscardSnapshot = discard
			if base.VCPU == nil && base.MemoryMiB == nil && base.NAT == nil && base.WorkDiskSize == "" && len(base.Publish)+len(base.Unpublish) == 0 {
				return usageErrorf("nothing to change; give --vcpu, --memory, --nat/--no-nat, --work-disk-size, --publish or --unpublish")
			}
			cl, err := a.client(c.Context())
			if err != nil {
				return err
			}
			outs, err := fanOut(c.Context(), cl, refs, func(ctx context.Context, vm api.VM) (api.VMResult, error) {
				p := base
				p.Ref = vm.ID
				var res api.VMResult
				err := cl.Call(ctx, api.MethodVMSet, p, &res)
				return res, err
			})
			if err != nil {
				return err
			}
			return a.reportBatch(outs, "set", jsonOut)
		},
	}
	f := cmd.Flags()
	f.IntVar(&vcpu, "vcpu", 0, "vCPUs, 1-32 (next start)")
	f.StringVar(&mem, "memory", "", "memory: a size such as 8G, or a number of MiB (next start)")
	f.BoolVar(&nat, "nat", false, "enable NAT (live)")
	f.BoolVar(&noNAT, "no-nat", false, "disable NAT (live)")
	f.StringVar(&work, "work-disk-size", "", "grow the work disk (stopped VM only)")
	f.StringArrayVarP(&publish, "publish", "p", nil, "forward host [ADDR:]HOST to guest port GUEST while it runs (live, repeatable)")
	f.StringArrayVar(&unpublish, "unpublish", nil, "stop forwarding host [ADDR:]HOST (live, repeatable)")
	f.BoolVar(&discard, "discard-snapshot", false, "on a suspended VM: allow a change that discards its snapshot")
	f.BoolVar(&jsonOut, "json", false, "print results as JSON")
	addCPUsAlias(cmd)
	return cmd
}

func (a *app) vmListCmd() *cobra.Command {
	var jsonOut bool
	var output string
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls", "ps"},
		Short:   "List VMs",
		Example: "  banger vm list\n  banger vm list -o wide\n  banger vm list --json",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if output != "" && output != "wide" {
				return usageErrorf("-o %q is not a format; use -o wide or --json", output)
			}
			cl, err := a.client(c.Context())
			if err != nil {
				return err
			}
			if jsonOut {
				vms, err := listVMs(c.Context(), cl)
				if err != nil {
					return err
				}
				return writeJSON(a.stdout, api.VMList{VMs: nonNil(vms)})
			}
			vms, err := listTable(c.Context(), cl)
			if err != nil {
				return err
			}
			now := time.Now()
			t := newTable(a.stdout)
			header := []string{"NAME", "ID", "STATE", "IP", "VCPU", "MEMORY", "NAT", "IMAGE", "CREATED"}
			if output == "wide" {
				header = []string{"NAME", "ID", "STATE", "IP", "VCPU", "MEMORY", "NAT", "IMAGE", "DISK", "WORK", "CREATED", "LAST USED"}
			}
			t.grow(len(vms) + 1)
			t.row(header...)
			// Every row's cells come from one array: a slice per row grown
			// past its first 8 cells was 190 KB of garbage for 500 VMs.
			cells := make([]string, 0, len(vms)*len(header))
			for _, v := range vms {
				nat := "-"
				if v.NAT {
					nat = "yes"
				}
				start := len(cells)
				cells = append(cells, v.Name, v.ID, stateLabel(api.VM{State: v.State, Snapshot: v.Snapshot}), v.IP, strconv.Itoa(v.VCPU), config.FormatSize(int64(v.MemoryMiB)<<20), nat, v.Image)
				if output == "wide" {
					cells = append(cells, config.FormatSize(v.DiskBytes), config.FormatSize(v.WorkDiskBytes), ago(v.CreatedAt, now), ago(v.LastUsedAt, now))
				} else {
					cells = append(cells, ago(v.CreatedAt, now))
				}
				t.row(cells[start:len(cells):len(cells)]...)
			}
			t.flush()
			return nil
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: wide")
	return cmd
}

// tableParams is vm.list's {table: true} as JSON: a params struct would
// cost its first json.Marshal a walk of its fields by reflection.
var tableParams = json.RawMessage(`{"table":true}`)

// listTable is vm.list's table view (api.VMRow). A daemon older than it
// refuses the param as invalid; the full list is then decoded into the same
// rows (the members of the same names; the rest is skipped, not stored).
func listTable(ctx context.Context, cl *client.Client) ([]api.VMRow, error) {
	var t api.VMTable
	err := cl.Call(ctx, api.MethodVMList, tableParams, &t)
	var e *api.Error
	if errors.As(err, &e) && e.Data.Kind == api.KindInvalid {
		t = api.VMTable{}
		err = cl.Call(ctx, api.MethodVMList, nil, &t)
	}
	return t.VMs, err
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func (a *app) vmShowCmd() *cobra.Command {
	var jsonOut bool
	cmd := &cobra.Command{
		Use:     "show VM",
		Short:   "Show one VM in detail",
		Example: "  banger vm show dev\n  banger vm show dev --json",
		Args:    cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			vm, err := a.oneVM(c.Context(), args[0])
			if err != nil {
				return err
			}
			if jsonOut {
				return writeJSON(a.stdout, vm)
			}
			now := time.Now()
			t := newTable(a.stdout)
			t.row("name", vm.Name)
			t.row("id", vm.ID)
			state := vm.State
			if vm.StopReason != "" && vm.State == api.StateStopped {
				state += " (" + vm.StopReason + ")"
			}
			t.row("state", state)
			if vm.Snapshot != nil {
				t.row("snapshot", snapshotLabel(vm.Snapshot, now))
			}
			if vm.LastError != "" {
				t.row("last error", vm.LastError)
			}
			t.row("image", vm.Image)
			t.row("vcpu", fmt.Sprint(vm.VCPU))
			t.row("memory", config.FormatSize(int64(vm.MemoryMiB)<<20))
			if len(vm.PendingChanges) > 0 {
				t.row("pending", strings.Join(vm.PendingChanges, ", ")+" (next start)")
			}
			t.row("ip", vm.IP)
			t.row("dns", vm.DNSName)
			for _, f := range vm.Forwards {
				t.row("forward", forwardLine(vm.Name, f))
			}
			t.row("mac", vm.MAC)
			t.row("tap", vm.Tap)
			t.row("nat", fmt.Sprint(vm.NAT))
			t.row("vsock cid", fmt.Sprint(vm.CID))
			t.row("vsock socket", vm.VsockPath)
			t.row("api socket", vm.APISocket)
			if vm.PID > 0 {
				t.row("pid", fmt.Sprint(vm.PID))
			}
			t.row("root disk", fmt.Sprintf("%s (%s, %s)", vm.RootDisk, config.FormatSize(vm.DiskBytes), vm.StorageDriver))
			t.row("work disk", fmt.Sprintf("%s (%s)", vm.WorkDisk, config.FormatSize(vm.WorkDiskBytes)))
			t.row("dir", vm.Dir)
			t.row("created", ago(vm.CreatedAt, now))
			t.row("started", ago(vm.StartedAt, now))
			t.row("last used", ago(vm.LastUsedAt, now))
			t.flush()
			return nil
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	return cmd
}

// sizingFlags validates --vcpu (or --cpus) and --memory when given;
// omitted flags stay nil so the daemon applies its defaults.
func sizingFlags(c *cobra.Command, vcpu int, memFlag string) (*int, *int, error) {
	var vp, mp *int
	if c.Flags().Changed("vcpu") {
		if vcpu < 1 || vcpu > 32 {
			return nil, nil, usageErrorf("--vcpu %d is out of range; use 1 to 32", vcpu)
		}
		vp = &vcpu
	}
	if c.Flags().Changed("memory") {
		mem, err := parseMemoryMiB(memFlag)
		if err != nil {
			return nil, nil, err
		}
		mp = &mem
	}
	return vp, mp, nil
}

// oneVM resolves a single VM reference.
func (a *app) oneVM(ctx context.Context, ref string) (api.VM, error) {
	cl, err := a.client(ctx)
	if err != nil {
		return api.VM{}, err
	}
	vms, err := listVMs(ctx, cl)
	if err != nil {
		return api.VM{}, err
	}
	vm, err := resolveOne(vms, ref)
	if err != nil {
		return api.VM{}, failf("%v", err)
	}
	return vm, nil
}
