package daemon

import (
	"banger/internal/network"
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"sync"
	"time"
)

// poolTapPrefix names pre-created taps. VM taps are "bgt-" plus a hex ID,
// so a "p" never collides with them.
const poolTapPrefix = "bgt-p"

// tapPool keeps tap_pool_size taps created ahead of time, on the bridge and
// owned by the user, so a start only has to rename one.
type tapPool struct {
	mu     sync.Mutex
	names  []string
	refill chan struct{}
}

func newTapPool() *tapPool { return &tapPool{refill: make(chan struct{}, 1)} }

func (p *tapPool) take() (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.names) == 0 {
		return "", false
	}
	n := p.names[len(p.names)-1]
	p.names = p.names[:len(p.names)-1]
	return n, true
}

func (p *tapPool) size() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.names)
}

func (p *tapPool) add(name string) {
	p.mu.Lock()
	p.names = append(p.names, name)
	p.mu.Unlock()
}

func (p *tapPool) kick() {
	select {
	case p.refill <- struct{}{}:
	default:
	}
}

func poolTapName() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return poolTapPrefix + hex.EncodeToString(b)
}

// adoptPoolTaps takes over pool taps a previous daemon left behind, up to
// tap_pool_size, and deletes the rest (for example after the pool was
// turned off), so none leak.
func (d *Daemon) adoptPoolTaps(ctx context.Context) {
	ents, err := os.ReadDir("/sys/class/net")
	if err != nil {
		return
	}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), poolTapPrefix) {
			continue
		}
		// Another user's pool taps share the prefix: leave them alone.
		if !network.OwnTap(e.Name(), os.Getuid()) {
			continue
		}
		if d.taps.size() < d.cfg.TapPoolSize {
			d.taps.add(e.Name())
			continue
		}
		if err := d.host.DeleteTap(ctx, e.Name()); err != nil {
			d.log.Warn("tap pool: removing a surplus pool tap", "tap", e.Name(), "err", err)
		}
	}
}

// runTapPool keeps the pool full until ctx ends.
func (d *Daemon) runTapPool(ctx context.Context, wg *sync.WaitGroup) {
	d.adoptPoolTaps(ctx)
	if d.cfg.TapPoolSize <= 0 {
		return
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		d.taps.kick()
		for {
			select {
			case <-ctx.Done():
				return
			case <-d.taps.refill:
			}
			for d.taps.size() < d.cfg.TapPoolSize && ctx.Err() == nil {
				if err := d.ensureBridge(ctx); err != nil {
					d.log.Warn("tap pool: bridge unavailable", "err", err)
					break
				}
				name := poolTapName()
				if err := d.host.CreateTap(ctx, name, d.cfg.BridgeName); err != nil {
					d.log.Warn("tap pool: creating tap", "tap", name, "err", err)
					select {
					case <-time.After(5 * time.Second):
					case <-ctx.Done():
					}
					break
				}
				d.taps.add(name)
			}
		}
	}()
}

// attachTap gives the VM its tap: a pool tap renamed to the VM's name when
// one is ready, else a new one.
func (d *Daemon) attachTap(ctx context.Context, tap string) error {
	if d.cfg.TapPoolSize > 0 {
		defer d.taps.kick()
		if name, ok := d.taps.take(); ok {
			if err := d.host.RenameTap(ctx, name, tap); err == nil {
				return nil
			} else {
				d.log.Warn("tap pool: handing out a pool tap failed; creating one", "tap", name, "err", err)
				_ = d.host.DeleteTap(ctx, name)
			}
		}
	}
	return d.host.CreateTap(ctx, tap, d.cfg.BridgeName)
}
