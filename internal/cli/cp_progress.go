//go:build !banger_front

package cli

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// progressMin is how much a copy moves before it shows a progress line.
const progressMin = 4 << 20

// copyProgress counts a copy's bytes and, on a terminal, redraws one line
// on stderr ("12.0 MiB copied, 48.1 MiB/s") four times a second once the
// copy passed progressMin. finish draws the last state (also for a copy
// that was over before the first tick) and ends the line.
type copyProgress struct {
	w     io.Writer
	on    bool
	start time.Time
	n     atomic.Int64
	stop  chan struct{}
	done  sync.WaitGroup
	mu    sync.Mutex
	shown bool
}

func (a *app) newCopyProgress(quiet bool) *copyProgress {
	p := &copyProgress{w: a.stderr, on: !quiet && a.isTerminal(a.stderr), start: time.Now(), stop: make(chan struct{})}
	if p.on {
		p.done.Add(1)
		go p.loop()
	}
	return p
}

func (p *copyProgress) reader(r io.Reader) io.Reader {
	return &countReader{r: r, n: &p.n}
}

func (p *copyProgress) loop() {
	defer p.done.Done()
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			p.draw()
		}
	}
}

func (p *copyProgress) draw() {
	n := p.n.Load()
	if n < progressMin {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	el := time.Since(p.start).Seconds()
	rate := 0.0
	if el > 0 {
		rate = float64(n) / el
	}
	fmt.Fprintf(p.w, "\r\033[K%s copied, %s/s", sizeText(float64(n)), sizeText(rate))
	p.shown = true
}

func (p *copyProgress) finish() {
	if !p.on {
		return
	}
	close(p.stop)
	p.done.Wait()
	p.draw()
	if p.shown {
		fmt.Fprintln(p.w)
	}
}

// sizeText is a byte count in binary units ("512 B", "1.5 MiB").
func sizeText(b float64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	i := 0
	for b >= 1024 && i < len(units)-1 {
		b /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%.0f B", b)
	}
	return fmt.Sprintf("%.1f %s", b, units[i])
}

type countReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}
