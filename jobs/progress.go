package jobs

import (
	"context"
	"sync"
	"time"

	"github.com/r8im/r8im/imageops"
)

// progressWriter keeps the latest progress of a task and writes it to its
// record about once every ProgressEvery, off the data path.
type progressWriter struct {
	mu          sync.Mutex
	done, total int64
	dirty       bool
	quit        chan struct{}
	wg          sync.WaitGroup
}

func (h *Handler) progress(ctx context.Context, id string) *progressWriter {
	every := h.ProgressEvery
	if every <= 0 {
		every = time.Second
	}
	p := &progressWriter{quit: make(chan struct{})}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-p.quit:
				return
			case <-tick.C:
				p.mu.Lock()
				done, total, dirty := p.done, p.total, p.dirty
				p.dirty = false
				p.mu.Unlock()
				if dirty {
					if err := h.Records.Progress(ctx, id, done, total); err != nil {
						logger(ctx, h.Log).Warn("recording progress", "error", err)
					}
				}
			}
		}
	}()
	return p
}

// report is an imageops progress callback: it only stores the figures.
func (p *progressWriter) report(ev imageops.Progress) {
	if ev.Done == 0 {
		return
	}
	p.mu.Lock()
	p.done, p.total, p.dirty = ev.Done, ev.Total, true
	p.mu.Unlock()
}

func (p *progressWriter) stop() {
	close(p.quit)
	p.wg.Wait()
}
