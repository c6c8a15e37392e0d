// Package bench is r8im's end-to-end benchmark (`make bench`): it starts
// the real services on loopback (distribution, Redis, MinIO), generates
// deterministic fp16-like weights and measures, side by side in one run,
// the raw registry upload floor, r8im affix (local file and through the
// worker from S3), crane append, remix, zstd recompression against regctl,
// memory, queue throughput, and publishing to a far registry (behind a
// proxy capping each connection's upload) against the single-stream floor. It prints a table and writes JSON; targets
// are checked and reported, never asserted by tests.
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/r8im/r8im/internal/testenv"
)

// Case groups, selectable with Config.Cases.
const (
	CaseAffix  = "affix"  // raw floor, r8im affix gzip/zstd/none, r8im memory
	CaseCrane  = "crane"  // crane append of the same tarball
	CaseS3     = "s3"     // affix from MinIO through a worker process
	CaseRemix  = "remix"  // remix of two affixed images
	CaseZstd   = "zstd"   // r8im zstd of a 3-layer image
	CaseRegctl = "regctl" // regctl image mod --layer-compress zstd
	CaseCache  = "cache"  // a second image through the shared-layer cache
	CaseQueue  = "queue"  // enqueue and no-op worker throughput
	CaseChunk  = "chunk"  // affix in one request vs 96 MiB chunks; chunks through a 100 MiB body cap
	CaseFar    = "far"    // a far registry: per-connection upload cap; r8im (tar, dir, S3 worker) vs the single-stream floor and crane
)

// AllCases is every case group, in the order they run.
var AllCases = []string{CaseAffix, CaseChunk, CaseCrane, CaseS3, CaseRemix, CaseZstd, CaseRegctl, CaseCache, CaseQueue, CaseFar}

// Config says what to measure.
type Config struct {
	Sizes      []int64 // weights tarball sizes for affix (default 1 GiB and 4 GiB)
	Runs       int     // runs per case; the median is reported (default 3)
	Shards     int     // weights files per tarball (default 8)
	ZstdSize   int64   // total size of the 3-layer image for zstd (default 1 GiB)
	QueueTasks int     // tasks enqueued per queue run (default 10,000)
	// FarBandwidth is the far case's upload cap per client connection, in
	// bytes per second (default DefaultFarBandwidth, 50 MB/s).
	FarBandwidth int64
	Cases        []string // case groups to run (default AllCases)
	WorkDir      string   // where data, logs and binaries go (default a new dir in $TMPDIR); removed at the end
	Keep         bool     // keep WorkDir
	Log          io.Writer
}

func (c *Config) defaults() error {
	if len(c.Sizes) == 0 {
		c.Sizes = []int64{1 << 30, 4 << 30}
	}
	if c.Runs == 0 {
		c.Runs = 3
	}
	if c.Shards == 0 {
		c.Shards = 8
	}
	if c.ZstdSize == 0 {
		c.ZstdSize = 1 << 30
	}
	if c.QueueTasks == 0 {
		c.QueueTasks = 10000
	}
	if c.FarBandwidth == 0 {
		c.FarBandwidth = DefaultFarBandwidth
	}
	if len(c.Cases) == 0 {
		c.Cases = AllCases
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	for _, s := range c.Sizes {
		if s < int64(c.Shards)<<10 {
			return fmt.Errorf("size %d is too small for %d shards", s, c.Shards)
		}
	}
	for _, cs := range c.Cases {
		if !slices.Contains(AllCases, cs) {
			return fmt.Errorf("unknown case %q: use %s", cs, strings.Join(AllCases, ", "))
		}
	}
	if c.Runs < 1 || c.Shards < 1 || c.QueueTasks < 1 || c.ZstdSize < 3<<10 {
		return fmt.Errorf("runs, shards, queue tasks and the zstd size must be positive")
	}
	if c.FarBandwidth < 1000 {
		return fmt.Errorf("far bandwidth %d bytes/s is too small: give at least 1000 (default %d)", c.FarBandwidth, DefaultFarBandwidth)
	}
	return nil
}

func (c *Config) has(cs string) bool { return slices.Contains(c.Cases, cs) }

// Result is one row of the report.
type Result struct {
	Case    string    `json:"case"` // stable id, e.g. affix-gzip-1GiB
	Title   string    `json:"title"`
	Size    int64     `json:"size_bytes,omitempty"` // input size
	Unit    string    `json:"unit"`                 // s, tasks/s, MiB, bytes
	Runs    []float64 `json:"runs,omitempty"`
	Median  float64   `json:"median"`
	Ratio   float64   `json:"ratio,omitempty"`
	RatioOf string    `json:"ratio_of,omitempty"` // what the ratio compares (e.g. "÷ raw floor")
	Target  string    `json:"target,omitempty"`
	Holds   *bool     `json:"holds,omitempty"`
	PeakRSS int64     `json:"peak_rss_bytes,omitempty"` // median over runs
	Bytes   int64     `json:"bytes,omitempty"`          // layer size, or bytes moved
	Note    string    `json:"note,omitempty"`
	Pending string    `json:"pending,omitempty"` // why it was not measured
}

// Machine describes where the figures come from.
type Machine struct {
	CPUs       int      `json:"cpus"`
	CPUModel   string   `json:"cpu_model"`
	MemTotal   string   `json:"mem_total"`
	Kernel     string   `json:"kernel"`
	Go         string   `json:"go"`
	Registry   string   `json:"registry"`
	Redis      string   `json:"redis"`
	Tools      []string `json:"tools,omitempty"`
	LoadBefore string   `json:"load_before"`
	LoadAfter  string   `json:"load_after"`
}

// Report is the whole benchmark's output.
type Report struct {
	Started time.Time `json:"started"`
	Seconds float64   `json:"seconds"`
	Machine Machine   `json:"machine"`
	Sizes   []int64   `json:"sizes"`
	Runs    int       `json:"runs"`
	Results []Result  `json:"results"`
}

// Find returns the result with id, or nil.
func (r *Report) Find(id string) *Result {
	for i := range r.Results {
		if r.Results[i].Case == id {
			return &r.Results[i]
		}
	}
	return nil
}

// bench is one benchmark run's state.
type bench struct {
	cfg    Config
	dir    string
	svc    *services
	log    io.Writer
	bins   binaries
	report *Report
	// images made by the affix case for remix: size → compression → ref
	affixed map[int64]map[string]string
	base    string // base image reference
	rss     rssTable
}

type binaries struct {
	r8im, worker, enqueue, crane, regctl string
}

// Run measures the cases of cfg and returns the report.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	b := &bench{cfg: cfg, log: cfg.Log, affixed: map[int64]map[string]string{}, rss: rssTable{}}
	b.report = &Report{Started: time.Now().UTC(), Sizes: cfg.Sizes, Runs: cfg.Runs, Machine: machine()}
	dir := cfg.WorkDir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "r8im-bench-"); err != nil {
			return nil, err
		}
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	b.dir = dir
	if !cfg.Keep {
		defer os.RemoveAll(dir)
	}
	if err := b.build(ctx); err != nil {
		return nil, err
	}
	withS3 := cfg.has(CaseS3) || cfg.has(CaseFar)
	b.logf("starting distribution, redis-server%s on loopback", map[bool]string{true: " and MinIO", false: ""}[withS3])
	svc, err := startServices(ctx, dir, withS3)
	if err != nil {
		return nil, err
	}
	b.svc = svc
	defer svc.stop()
	if err := b.run(ctx); err != nil {
		return b.report, err
	}
	b.report.Machine.LoadAfter = loadAvg()
	b.report.Seconds = time.Since(b.report.Started).Seconds()
	return b.report, nil
}

func (b *bench) run(ctx context.Context) error {
	var err error
	if b.base, err = pushBase(ctx, b.svc.regHost+"/base/bench:v1", 3); err != nil {
		return fmt.Errorf("pushing the base image: %w", err)
	}
	if b.cfg.has(CaseAffix) || b.cfg.has(CaseChunk) || b.cfg.has(CaseCrane) || b.cfg.has(CaseS3) {
		for _, size := range b.cfg.Sizes {
			if err := b.affixSize(ctx, size); err != nil {
				return err
			}
		}
		b.memoryRows()
	}
	if b.cfg.has(CaseRemix) {
		if err := b.remix(ctx); err != nil {
			return fmt.Errorf("remix: %w", err)
		}
	}
	if b.cfg.has(CaseZstd) || b.cfg.has(CaseRegctl) || b.cfg.has(CaseCache) {
		if err := b.zstd(ctx); err != nil {
			return fmt.Errorf("zstd: %w", err)
		}
	}
	if b.cfg.has(CaseQueue) {
		if err := b.queue(ctx); err != nil {
			return fmt.Errorf("queue: %w", err)
		}
	}
	if b.cfg.has(CaseFar) {
		if err := b.far(ctx); err != nil {
			return fmt.Errorf("far: %w", err)
		}
	}
	return nil
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "bench: "+format+"\n", args...)
}

func (b *bench) add(r Result) *Result {
	if r.Median == 0 && len(r.Runs) > 0 {
		r.Median = median(r.Runs)
	}
	b.report.Results = append(b.report.Results, r)
	return &b.report.Results[len(b.report.Results)-1]
}

// build compiles r8im, worker and enqueue as `make build` does, and finds
// crane and regctl.
func (b *bench) build(ctx context.Context) error {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(out)) == "" || strings.TrimSpace(string(out)) == os.DevNull {
		return fmt.Errorf("finding the module root (run from inside the r8im module): %v", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	bin := filepath.Join(b.dir, "bin")
	b.logf("building r8im, worker and enqueue")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin+"/", "./cmd/r8im", "./cmd/worker", "./cmd/enqueue")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building the binaries: %w\n%s", err, out)
	}
	b.bins.r8im, b.bins.worker, b.bins.enqueue = filepath.Join(bin, "r8im"), filepath.Join(bin, "worker"), filepath.Join(bin, "enqueue")
	if b.cfg.has(CaseCrane) || b.cfg.has(CaseFar) {
		if b.bins.crane, err = testenv.FindBinary("crane"); err != nil {
			return fmt.Errorf("%w (make bench installs it)", err)
		}
	}
	if b.cfg.has(CaseRegctl) {
		if b.bins.regctl, err = testenv.FindBinary("regctl"); err != nil {
			return fmt.Errorf("%w (make bench installs it)", err)
		}
	}
	return nil
}

// timed runs a command and returns its wall time, peak RSS and stdout.
type runResult struct {
	seconds float64
	rss     int64
	stdout  []byte
}

func (b *bench) exec(ctx context.Context, env []string, stdin io.Reader, bin string, args ...string) (runResult, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = stdin
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	r := runResult{seconds: time.Since(start).Seconds(), rss: peakRSS(cmd.ProcessState), stdout: []byte(stdout.String())}
	if err != nil {
		msg := stderr.String()
		if len(msg) > 3000 {
			msg = msg[len(msg)-3000:]
		}
		return r, fmt.Errorf("%s %s: %w\n%s", filepath.Base(bin), strings.Join(args, " "), err, msg)
	}
	return r, nil
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func medianInt(xs []int64) int64 {
	f := make([]float64, len(xs))
	for i, x := range xs {
		f[i] = float64(x)
	}
	return int64(median(f))
}

func holds(ok bool) *bool { return &ok }

// sizeName is 1GiB, 4GiB, 8MiB…
func sizeName(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	}
	return strings.ReplaceAll(humanize.IBytes(uint64(n)), " ", "")
}

// WriteJSON writes the report to path.
func (r *Report) WriteJSON(path string) error {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// PrintTable writes the human-readable table.
func (r *Report) PrintTable(w io.Writer) error {
	m := r.Machine
	fmt.Fprintf(w, "r8im bench, %s: %d× %s, %s RAM, Linux %s, %s\n", r.Started.Format("2006-01-02 15:04 MST"), m.CPUs, m.CPUModel, m.MemTotal, m.Kernel, m.Go)
	fmt.Fprintf(w, "services: %s, %s; tools: %s\n", m.Registry, m.Redis, strings.Join(m.Tools, ", "))
	fmt.Fprintf(w, "load average before: %s, after: %s; %d run(s) per case, median shown\n\n", m.LoadBefore, m.LoadAfter, r.Runs)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CASE\tRUNS\tMEDIAN\tRATIO\tTARGET\tHOLDS\tPEAK RSS\tBYTES\tNOTE")
	for _, res := range r.Results {
		if res.Pending != "" {
			fmt.Fprintf(tw, "%s\t–\tpending\t\t%s\t–\t\t\t%s\n", res.Title, res.Target, res.Pending)
			continue
		}
		runs := make([]string, len(res.Runs))
		for i, x := range res.Runs {
			runs[i] = fmtValue(x, res.Unit)
		}
		ratio := ""
		if res.RatioOf != "" {
			ratio = fmt.Sprintf("%.2f %s", res.Ratio, res.RatioOf)
		}
		h := ""
		if res.Holds != nil {
			h = map[bool]string{true: "yes", false: "NO"}[*res.Holds]
		}
		rss, bytes := "", ""
		if res.PeakRSS > 0 {
			rss = fmt.Sprintf("%.0f MiB", float64(res.PeakRSS)/(1<<20))
		}
		if res.Bytes > 0 || res.Unit == "bytes" {
			bytes = humanize.IBytes(uint64(res.Bytes))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s %s\t%s\t%s\t%s\t%s\t%s\t%s\n", res.Title, strings.Join(runs, ", "), fmtValue(res.Median, res.Unit), res.Unit,
			ratio, res.Target, h, rss, bytes, res.Note)
	}
	return tw.Flush()
}

func fmtValue(x float64, unit string) string {
	switch unit {
	case "s":
		return fmt.Sprintf("%.2f", x)
	case "bytes", "MiB":
		return fmt.Sprintf("%.0f", x)
	}
	return fmt.Sprintf("%.0f", x)
}

// machine collects what the figures depend on.
func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), LoadBefore: loadAvg()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb uint64
		if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kb); err == nil {
			m.MemTotal = humanize.IBytes(kb << 10)
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	m.Registry = toolVersion("docker-registry", "--version")
	m.Redis = toolVersion("redis-server", "--version")
	m.Tools = []string{toolVersion("crane", "version"), toolVersion("regctl", "version", "--format", "{{.VCSTag}}")}
	return m
}

func toolVersion(name string, args ...string) string {
	p, err := testenv.FindBinary(name)
	if err != nil {
		return name + " (not installed)"
	}
	out, err := exec.Command(p, args...).Output()
	if err != nil {
		return name + " (unknown version)"
	}
	v := strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	if !strings.Contains(strings.ToLower(v), strings.TrimSuffix(name, "-server")) {
		v = name + " " + v
	}
	return v
}

// loadAvg is the 1, 5 and 15 minute load average.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

var errNoImage = errors.New("no image")
