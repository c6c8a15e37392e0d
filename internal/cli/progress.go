package cli

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/r8im/r8im/imageops"
)

// Progress renders imageops progress on w (stderr): a redrawn bar on a
// terminal, one line per stage and every 10 seconds otherwise, nothing when
// quiet.
type Progress struct {
	w         io.Writer
	tty       bool
	quiet     bool
	mu        sync.Mutex
	stage     string
	start     time.Time
	lastPrint time.Time
}

// NewProgress reports to w; a bar is drawn only when w is a terminal.
func NewProgress(w io.Writer, quiet bool) *Progress {
	return &Progress{w: w, quiet: quiet, tty: IsTerminal(w)}
}

// Report is an imageops.WithProgress callback.
func (p *Progress) Report(ev imageops.Progress) {
	if p.quiet {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if ev.Stage != p.stage {
		p.endLine()
		p.stage, p.start, p.lastPrint = ev.Stage, now, now
		if !p.tty {
			fmt.Fprintf(p.w, "%s…\n", ev.Stage)
		}
		return
	}
	if ev.Done == 0 || (!p.tty && now.Sub(p.lastPrint) < 10*time.Second) {
		return
	}
	p.lastPrint = now
	rate := float64(ev.Done) / max(now.Sub(p.start).Seconds(), 1e-3)
	line := fmt.Sprintf("%-8s %10s", ev.Stage, humanize.IBytes(uint64(ev.Done)))
	if ev.Total > 0 {
		frac := min(float64(ev.Done)/float64(ev.Total), 1)
		const width = 30
		filled := int(frac * width)
		line = fmt.Sprintf("%-8s [%-*s] %5.1f%% %10s / %s", ev.Stage, width, bar(filled), frac*100,
			humanize.IBytes(uint64(ev.Done)), humanize.IBytes(uint64(ev.Total)))
	}
	line += fmt.Sprintf("  %s/s", humanize.IBytes(uint64(rate)))
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", line)
	} else {
		fmt.Fprintln(p.w, line)
	}
}

// Done ends the bar's line.
func (p *Progress) Done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.endLine()
	p.stage = ""
}

func (p *Progress) endLine() {
	if p.tty && p.stage != "" {
		fmt.Fprint(p.w, "\r\033[K")
	}
}

func bar(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = '='
	}
	return string(b)
}
