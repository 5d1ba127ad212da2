// Package tui is banger's terminal UI: a live table of VMs fed by the
// daemon's event stream, a detail pane, and key bindings for the everyday
// VM operations.
package tui

import (
	"context"
	"fmt"
	"time"

	tea "charm.land/bubbletea/v2"

	"banger/internal/api"
	"banger/internal/client"
)

// Daemon is what the TUI needs from bangerd. *client.Client satisfies it
// through FromClient; tests use a stateful fake.
type Daemon interface {
	ListVMs(ctx context.Context) ([]api.VM, error)
	Stats(ctx context.Context) ([]api.Stats, error)
	Health(ctx context.Context, id string) (api.Health, error)
	// Action runs a single-VM method (vm.start, vm.stop, vm.restart,
	// vm.kill, vm.delete) on the VM with this ID.
	Action(ctx context.Context, method, id string) (api.VMResult, error)
	SetNAT(ctx context.Context, id string, on bool) (api.VMResult, error)
	Create(ctx context.Context, p api.VMCreateParams) (api.VMResult, error)
	Events(ctx context.Context) (<-chan api.Event, func() error, error)
}

// FromClient adapts a daemon client to Daemon.
func FromClient(c *client.Client) Daemon { return clientDaemon{c} }

type clientDaemon struct{ c *client.Client }

func (d clientDaemon) ListVMs(ctx context.Context) ([]api.VM, error) {
	var l api.VMList
	err := d.c.Call(ctx, api.MethodVMList, nil, &l)
	return l.VMs, err
}

func (d clientDaemon) Stats(ctx context.Context) ([]api.Stats, error) {
	var l api.StatsList
	err := d.c.Call(ctx, api.MethodVMStats, api.StatsParams{}, &l)
	return l.Stats, err
}

func (d clientDaemon) Health(ctx context.Context, id string) (api.Health, error) {
	var h api.Health
	err := d.c.Call(ctx, api.MethodVMHealth, api.VMRef{Ref: id}, &h)
	return h, err
}

func (d clientDaemon) Action(ctx context.Context, method, id string) (api.VMResult, error) {
	var res api.VMResult
	var params any = api.VMRef{Ref: id}
	if method == api.MethodVMKill {
		params = api.VMKillParams{Ref: id}
	}
	err := d.c.Call(ctx, method, params, &res)
	return res, err
}

func (d clientDaemon) SetNAT(ctx context.Context, id string, on bool) (api.VMResult, error) {
	var res api.VMResult
	err := d.c.Call(ctx, api.MethodVMSet, api.VMSetParams{Ref: id, NAT: &on}, &res)
	return res, err
}

func (d clientDaemon) Create(ctx context.Context, p api.VMCreateParams) (api.VMResult, error) {
	var res api.VMResult
	err := d.c.Call(ctx, api.MethodVMCreate, p, &res)
	return res, err
}

func (d clientDaemon) Events(ctx context.Context) (<-chan api.Event, func() error, error) {
	return d.c.Events(ctx)
}

// Messages from the event pump.
type (
	eventMsg  api.Event
	streamMsg struct {
		up  bool
		err error
	}
)

// Pump forwards the daemon's events to send until ctx ends, reconnecting
// after retry when the stream drops (for example across a daemon restart).
// send is tea.Program.Send in production.
func Pump(ctx context.Context, d Daemon, retry time.Duration, send func(tea.Msg)) {
	for {
		ch, errf, err := d.Events(ctx)
		if err == nil {
			send(streamMsg{up: true})
			for ev := range ch {
				send(eventMsg(ev))
			}
			err = errf()
			if err == nil {
				err = fmt.Errorf("the daemon closed it")
			}
		}
		if ctx.Err() != nil {
			return
		}
		send(streamMsg{err: err})
		select {
		case <-ctx.Done():
			return
		case <-time.After(retry):
		}
	}
}
