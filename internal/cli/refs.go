package cli

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"banger/internal/api"
	"banger/internal/client"
)

// resolved is one ref's outcome: a VM, or why it did not resolve.
type resolved struct {
	ref string
	vm  api.VM
	err error
}

// resolveRefs resolves refs against one vm.list snapshot: exact name first,
// then exact ID, then a unique ID prefix. Duplicates (two refs naming the
// same VM) are dropped, keeping the first.
func resolveRefs(vms []api.VM, refs []string) []resolved {
	var out []resolved
	seen := map[string]bool{}
	for _, ref := range refs {
		vm, err := resolveOne(vms, ref)
		if err == nil {
			if seen[vm.ID] {
				continue
			}
			seen[vm.ID] = true
		}
		out = append(out, resolved{ref: ref, vm: vm, err: err})
	}
	return out
}

func resolveOne(vms []api.VM, ref string) (api.VM, error) {
	if ref == "" {
		return api.VM{}, fmt.Errorf("empty vm reference")
	}
	for _, v := range vms {
		if v.Name == ref {
			return v, nil
		}
	}
	for _, v := range vms {
		if v.ID == ref {
			return v, nil
		}
	}
	var matches []api.VM
	for _, v := range vms {
		if strings.HasPrefix(v.ID, ref) {
			matches = append(matches, v)
		}
	}
	switch len(matches) {
	case 1:
		return matches[0], nil
	case 0:
		return api.VM{}, fmt.Errorf("no vm named %q (list them with `banger vm list`)", ref)
	default:
		var names []string
		for _, m := range matches {
			names = append(names, m.Name+" ("+m.ID+")")
		}
		return api.VM{}, fmt.Errorf("vm reference %q is ambiguous: matches %s; use more of the id or the name", ref, strings.Join(names, ", "))
	}
}

func listVMs(ctx context.Context, cl *client.Client) ([]api.VM, error) {
	var l api.VMList
	if err := cl.Call(ctx, api.MethodVMList, nil, &l); err != nil {
		return nil, err
	}
	return l.VMs, nil
}

// fanOutMax bounds how many VMs one command works on at once: each is a
// connection to the daemon, which admits 256 per user (`vm stop` of 500
// VMs at once had the daemon drop half of them).
const fanOutMax = 32

// fanOut resolves refs, runs fn for each resolved VM concurrently (at most
// fanOutMax at a time) and returns outcomes in first-seen order. Unresolved
// refs carry their error.
func fanOut[T any](ctx context.Context, cl *client.Client, refs []string, fn func(ctx context.Context, vm api.VM) (T, error)) ([]outcome[T], error) {
	vms, err := listVMs(ctx, cl)
	if err != nil {
		return nil, err
	}
	res := resolveRefs(vms, refs)
	out := make([]outcome[T], len(res))
	var wg sync.WaitGroup
	slots := make(chan struct{}, fanOutMax)
	for i, r := range res {
		out[i] = outcome[T]{ref: r.ref, vm: r.vm, err: r.err}
		if r.err != nil {
			continue
		}
		noteProgressCall(ctx, r.vm.ID)
		wg.Add(1)
		slots <- struct{}{}
		go func(i int, vm api.VM) {
			defer wg.Done()
			defer func() { <-slots }()
			v, err := fn(ctx, vm)
			out[i].val = v
			out[i].err = err
		}(i, r.vm)
	}
	wg.Wait()
	return out, nil
}

type outcome[T any] struct {
	ref string
	vm  api.VM
	val T
	err error
}

// label names an outcome for messages.
func (o outcome[T]) label() string {
	if o.vm.Name != "" {
		return o.vm.Name
	}
	return o.ref
}
