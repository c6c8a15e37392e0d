package imageops

import (
	"io"
	"time"
)

// Stage is the wall time one step of an operation took.
type Stage struct {
	Name    string  `json:"name"`
	Seconds float64 `json:"seconds"`
}

// stages times an operation's steps and reports progress.
type stages struct {
	o    *options
	list []Stage
	cur  string
	t0   time.Time
}

func newStages(o *options) *stages { return &stages{o: o} }

func (s *stages) start(name string) {
	if s.cur == name {
		return // e.g. remix resolving its second image
	}
	s.stop()
	s.cur, s.t0 = name, time.Now()
	s.o.report(name, 0, 0)
}

func (s *stages) stop() {
	if s.cur != "" {
		s.list = append(s.list, Stage{Name: s.cur, Seconds: time.Since(s.t0).Seconds()})
		s.cur = ""
	}
}

// progress returns a byte-count callback reporting under stage.
func (s *stages) progress(stage string, total int64) func(int64) {
	return func(done int64) { s.o.report(stage, done, total) }
}

// progressReader reports bytes read every few MiB and at the end.
type progressReader struct {
	r        io.Reader
	report   func(int64)
	n, last  int64
	finished bool
}

const progressStep = 4 << 20

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n += int64(n)
	if p.report != nil && (p.n-p.last >= progressStep || (err == io.EOF && !p.finished)) {
		p.last, p.finished = p.n, err == io.EOF
		p.report(p.n)
	}
	return n, err
}
