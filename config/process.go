package config

import (
	"encoding/json"
	"log/slog"
	"maps"
	"net"
	"slices"
	"time"

	"github.com/spf13/pflag"
)

// settings is embedded in every process Config. It gives each one the same
// flag registration, environment loading and redaction, driven by the
// settings that the Config's sections bound.
type settings struct{ b *binder }

// RegisterFlags adds the configuration's flags to fs (usually a cobra
// command's flags). Flags set on the command line win over the environment.
func (s settings) RegisterFlags(fs *pflag.FlagSet) { s.b.registerFlags(fs) }

// Section names a group of settings of a Config, so that a command can
// show only the flags it uses (RegisterSections). Every setting is still
// read from the environment.
type Section string

// The sections of Enqueue.
const (
	SectionRedis    Section = "redis"
	SectionRegistry Section = "registry"
	SectionLog      Section = "log"
	SectionTasks    Section = "tasks"   // task timeouts and retries
	SectionEvents   Section = "events"  // the event receiver
	SectionRecords  Section = "records" // record TTL
)

// RegisterSections adds the flags of the given sections to fs; a command
// that uses only some sections shows only their flags. The same flag may
// be registered on several commands.
func (s settings) RegisterSections(fs *pflag.FlagSet, sections ...Section) {
	if len(sections) == 0 {
		return
	}
	s.b.registerFlags(fs, sections...)
}

// Load reads the environment through lookup for every setting whose flag was
// not given. Unparseable values are reported by Validate.
func (s settings) Load(lookup LookupFunc) { s.b.load(lookup) }

// Redacted returns every setting keyed by its environment variable (or
// --flag), with tokens, passwords and secret keys masked. It is the only
// form in which a configuration is ever printed or logged.
func (s settings) Redacted() map[string]string { return s.b.redacted() }

// LogValue makes slog print the redacted form.
func (s settings) LogValue() slog.Value {
	r := s.Redacted()
	attrs := make([]slog.Attr, 0, len(r))
	for _, k := range slices.Sorted(maps.Keys(r)) {
		attrs = append(attrs, slog.String(k, r[k]))
	}
	return slog.GroupValue(attrs...)
}

// String makes fmt print the redacted form, so %v never leaks a secret.
func (s settings) String() string {
	out, _ := json.Marshal(s.Redacted()) // a map of strings always marshals
	return string(out)
}

// GoString does the same for %#v.
func (s settings) GoString() string { return s.String() }

// DefaultQueues are the asynq queues and their priority weights: events
// first, operator work next, backfills with what is left.
var DefaultQueues = map[string]int{"publish": 6, "ops": 3, "backfill": 1}

// DefaultRecordTTL is how long publish records are kept (30 days).
const DefaultRecordTTL = 30 * 24 * time.Hour

// Worker configures the worker process.
type Worker struct {
	settings
	Redis    Redis
	Registry Registry
	S3       S3
	Log      Log
	// Callbacks: result callback signing and retries, the per-registry bound.
	Callbacks Callbacks
	Limits    Limits
	Network   Network

	Concurrency     int            // tasks processed at once
	Queues          map[string]int // queue name → priority weight
	ShutdownTimeout time.Duration  // grace period for running tasks on SIGTERM
	HTTPAddr        string         // /metrics and /healthz
	RecordTTL       time.Duration
	// WeightsLayers is the weights layout of tasks that name none: auto,
	// per-file or single. UploadJobs is how many weights layers one task
	// reads and uploads at once.
	WeightsLayers string
	UploadJobs    int

	// Dev runs an embedded Redis, registry and S3 in the process (worker
	// --dev); Demo then publishes a demo image and exits; DataDir keeps the
	// embedded registry's blobs and S3 objects (default: a temp dir).
	Dev, Demo bool
	DataDir   string
}

// NewWorker returns a worker configuration holding the defaults.
func NewWorker() *Worker {
	c := &Worker{settings: settings{newBinder()}}
	b := c.b
	c.Redis.bind(b)
	c.Registry.bind(b)
	c.S3.bind(b)
	c.Log.bind(b)
	c.Callbacks.bind(b)
	c.Limits.bind(b)
	c.Network.bind(b)
	c.Network.bindWorker(b)
	b.bind(intVar(&c.Concurrency, 4), "concurrency", "c", []string{"R8IM_CONCURRENCY"}, plain,
		"tasks processed at once by this worker")
	b.bind(queuesVar(&c.Queues, maps.Clone(DefaultQueues)), "queues", "", []string{"R8IM_QUEUES"}, plain,
		"queues to serve with priority weights, e.g. publish=6,ops=3,backfill=1")
	b.bind(durationVar(&c.ShutdownTimeout, 30*time.Second), "shutdown-timeout", "", []string{"R8IM_SHUTDOWN_TIMEOUT"}, plain,
		"on SIGTERM, how long running tasks may finish before they are requeued")
	b.bind(stringVar(&c.HTTPAddr, "127.0.0.1:9090"), "http-addr", "", []string{"R8IM_HTTP_ADDR"}, plain,
		"listen address for /metrics and /healthz")
	b.bind(durationVar(&c.RecordTTL, DefaultRecordTTL), "record-ttl", "", []string{"R8IM_RECORD_TTL"}, plain,
		"how long publish records are kept in Redis")
	b.bind(stringVar(&c.WeightsLayers, "auto"), "weights-layers", "", []string{"R8IM_WEIGHTS_LAYERS"}, plain,
		"weights layout of tasks that name none: auto (a layer per file of 64MiB or more, small files bundled), per-file or single")
	b.bind(intVar(&c.UploadJobs, 4), "upload-jobs", "", []string{"R8IM_UPLOAD_JOBS"}, plain,
		"weights layers one task reads and uploads at once (S3 prefixes, directories and .tar files)")
	b.bind(boolVar(&c.Dev, false), "dev", "", nil, plain,
		"run an embedded Redis, registry, S3 and event receiver in this process, on loopback (nothing else to install)")
	b.bind(boolVar(&c.Demo, false), "demo", "", nil, plain,
		"with --dev: publish a demo image through a signed training event, print it and exit")
	b.bind(stringVar(&c.DataDir, ""), "data-dir", "", []string{"R8IM_DATA_DIR"}, plain,
		"with --dev: directory for the embedded registry's blobs and S3 objects (default: a temp dir, removed at exit)")
	return c
}

// Validate returns every problem with the configuration at once.
func (c *Worker) Validate() error {
	ps := slices.Clone(c.b.loadErrs)
	ps = append(ps, c.Redis.validate(c.b)...)
	ps = append(ps, c.Registry.validate(c.b)...)
	ps = append(ps, c.S3.validate(c.b)...)
	ps = append(ps, c.Log.validate(c.b)...)
	ps = append(ps, c.Callbacks.validate(c.b)...)
	ps = append(ps, c.Limits.validate(c.b)...)
	ps = append(ps, c.Network.validate(c.b)...)
	if c.Concurrency < 1 || c.Concurrency > 1024 {
		ps = append(ps, c.b.problem("concurrency", "must be between 1 and 1024, got %d", c.Concurrency))
	}
	switch c.WeightsLayers {
	case "auto", "per-file", "single":
	default:
		ps = append(ps, c.b.problem("weights-layers", "unknown layout %q; use auto, per-file or single", c.WeightsLayers))
	}
	if c.UploadJobs < 1 || c.UploadJobs > 64 {
		ps = append(ps, c.b.problem("upload-jobs", "must be between 1 and 64, got %d", c.UploadJobs))
	}
	if len(c.Queues) == 0 {
		ps = append(ps, c.b.problem("queues", "no queues to serve; use e.g. publish=6,ops=3,backfill=1"))
	}
	for _, q := range slices.Sorted(maps.Keys(c.Queues)) {
		if _, known := DefaultQueues[q]; !known {
			ps = append(ps, c.b.problem("queues", "unknown queue %q; known queues are backfill, ops and publish", q))
		}
		if c.Queues[q] < 1 {
			ps = append(ps, c.b.problem("queues", "queue %q needs a weight of at least 1, got %d", q, c.Queues[q]))
		}
	}
	if c.ShutdownTimeout <= 0 {
		ps = append(ps, c.b.problem("shutdown-timeout", "must be positive, got %s", c.ShutdownTimeout))
	}
	ps = append(ps, validateAddr(c.b, "http-addr", c.HTTPAddr)...)
	ps = append(ps, validateTTL(c.b, c.RecordTTL)...)
	if c.Demo && !c.Dev {
		ps = append(ps, c.b.problem("demo", "runs on the embedded stack only; add --dev"))
	}
	if c.DataDir != "" && !c.Dev {
		ps = append(ps, c.b.problem("data-dir", "is where --dev keeps its embedded services' data; add --dev, or unset R8IM_DATA_DIR"))
	}
	return asError(ps)
}

// Enqueue configures the enqueue CLI (the producer side).
type Enqueue struct {
	settings
	Redis     Redis
	Registry  Registry
	Log       Log
	Tasks     Tasks
	Events    Events
	RecordTTL time.Duration
}

// NewEnqueue returns an enqueue configuration holding the defaults.
func NewEnqueue() *Enqueue {
	c := &Enqueue{settings: settings{newBinder()}}
	c.b.section = SectionRedis
	c.Redis.bind(c.b)
	c.b.section = SectionRegistry
	c.Registry.bind(c.b)
	c.b.section = SectionLog
	c.Log.bind(c.b)
	c.b.section = SectionTasks
	c.Tasks.bind(c.b)
	c.b.section = SectionEvents
	c.Events.bind(c.b)
	c.b.section = SectionRecords
	c.b.bind(durationVar(&c.RecordTTL, DefaultRecordTTL), "record-ttl", "", []string{"R8IM_RECORD_TTL"}, plain,
		"how long publish records are kept in Redis")
	return c
}

// Validate returns every problem with the configuration at once.
func (c *Enqueue) Validate() error {
	ps := slices.Clone(c.b.loadErrs)
	ps = append(ps, c.Redis.validate(c.b)...)
	ps = append(ps, c.Registry.validate(c.b)...)
	ps = append(ps, c.Log.validate(c.b)...)
	ps = append(ps, c.Tasks.validate(c.b)...)
	ps = append(ps, c.Events.validate(c.b)...)
	ps = append(ps, validateTTL(c.b, c.RecordTTL)...)
	return asError(ps)
}

// R8im configures the direct r8im CLI.
type R8im struct {
	settings
	Registry Registry
	Limits   Limits
	Network  Network
}

// NewR8im returns an r8im configuration holding the defaults.
func NewR8im() *R8im {
	c := &R8im{settings: settings{newBinder()}}
	c.Registry.bind(c.b)
	c.Limits.bind(c.b)
	c.Network.bind(c.b)
	return c
}

// Validate returns every problem with the configuration at once.
func (c *R8im) Validate() error {
	ps := slices.Clone(c.b.loadErrs)
	ps = append(ps, c.Registry.validate(c.b)...)
	ps = append(ps, c.Limits.validate(c.b)...)
	ps = append(ps, c.Network.validate(c.b)...)
	return asError(ps)
}

func validateAddr(b *binder, flag, addr string) []Problem {
	if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
		return []Problem{b.problem(flag, "%q is not a host:port listen address; use e.g. 127.0.0.1:9090", addr)}
	}
	return nil
}

func validateTTL(b *binder, ttl time.Duration) []Problem {
	if ttl < time.Hour {
		return []Problem{b.problem("record-ttl", "must be at least 1h so records outlive their tasks, got %s", ttl)}
	}
	return nil
}
