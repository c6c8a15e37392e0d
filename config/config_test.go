package config_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/r8im/r8im/config"
)

// env is a map-backed environment; its lookup method is a config.LookupFunc.
// A nil env is an empty environment.
type env map[string]string

func (e env) lookup(key string) (string, bool) {
	v, ok := e[key]
	return v, ok
}

// with returns a copy of e with kv added (key, value, key, value...).
func (e env) with(kv ...string) env {
	out := make(env, len(e)+len(kv)/2)
	for k, v := range e {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

// configurable is what every process configuration offers.
type configurable interface {
	RegisterFlags(*pflag.FlagSet)
	Load(config.LookupFunc)
	Validate() error
	Redacted() map[string]string
}

type kind struct {
	name string
	new  func() configurable
}

var kinds = []kind{
	{"worker", func() configurable { return config.NewWorker() }},
	{"enqueue", func() configurable { return config.NewEnqueue() }},
	{"r8im", func() configurable { return config.NewR8im() }},
}

// Which process configurations carry a setting.
var (
	allKinds    = []string{"worker", "enqueue", "r8im"}
	redisKinds  = []string{"worker", "enqueue"}
	workerKinds = []string{"worker"}
)

// newFlagSet returns a flag set that reports parse errors instead of exiting
// or printing.
func newFlagSet(t *testing.T) *pflag.FlagSet {
	t.Helper()
	fs := pflag.NewFlagSet(t.Name(), pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// load wires cfg up the way a command does: register its flags, parse args,
// then read the environment for the flags that were not given.
func load[C configurable](t *testing.T, cfg C, e env, args ...string) C {
	t.Helper()
	loadFlags(t, cfg, e, args...)
	return cfg
}

// loadFlags is load, returning the flag set for inspection.
func loadFlags(t *testing.T, cfg configurable, e env, args ...string) *pflag.FlagSet {
	t.Helper()
	fs := newFlagSet(t)
	cfg.RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parsing %q: %v", args, err)
	}
	cfg.Load(e.lookup)
	return fs
}

// loadWorker loads a worker configuration and requires it to be valid.
func loadWorker(t *testing.T, e env, args ...string) *config.Worker {
	t.Helper()
	w := load(t, config.NewWorker(), e, args...)
	if err := w.Validate(); err != nil {
		t.Fatalf("Validate() with env %v, args %q: %v", e, args, err)
	}
	return w
}

// problems returns the problems carried by err, failing the test unless err
// is a *config.ValidationError holding at least one problem.
func problems(t *testing.T, err error) []config.Problem {
	t.Helper()
	if err == nil {
		t.Fatal("Validate() = nil, want a *config.ValidationError")
	}
	var ve *config.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("Validate() = %T (%v), want a *config.ValidationError", err, err)
	}
	if len(ve.Problems) == 0 {
		t.Fatalf("ValidationError has no problems: %v", err)
	}
	for _, p := range ve.Problems {
		if !strings.Contains(err.Error(), p.String()) {
			t.Errorf("error text %q does not list problem %q", err.Error(), p)
		}
	}
	return ve.Problems
}

// field is one expected value of a loaded configuration.
type field struct {
	name      string
	got, want any
}

func checkFields(t *testing.T, fields []field) {
	t.Helper()
	for _, f := range fields {
		if !reflect.DeepEqual(f.got, f.want) {
			t.Errorf("%s = %#v, want %#v", f.name, f.got, f.want)
		}
	}
}

func TestDefaults(t *testing.T) {
	t.Run("worker", func(t *testing.T) {
		w := loadWorker(t, nil)
		checkFields(t, []field{
			{"Redis.URL", string(w.Redis.URL), "redis://127.0.0.1:6379/0"},
			{"Registry.Host", w.Registry.Host, "r8.im"},
			{"Registry.Token", string(w.Registry.Token), ""},
			{"Registry.DockerConfig", w.Registry.DockerConfig, ""},
			{"Registry.Insecure", w.Registry.Insecure, false},
			{"S3.Endpoint", w.S3.Endpoint, ""},
			{"S3.Region", w.S3.Region, "us-east-1"},
			{"S3.PathStyle", w.S3.PathStyle, false},
			{"S3.ChunkSize", w.S3.ChunkSize, int64(16 << 20)},
			{"S3.Concurrency", w.S3.Concurrency, 8},
			{"S3.AccessKeyID", string(w.S3.AccessKeyID), ""},
			{"S3.SecretAccessKey", string(w.S3.SecretAccessKey), ""},
			{"S3.SessionToken", string(w.S3.SessionToken), ""},
			{"Log.Level", w.Log.Level, "info"},
			{"Log.Format", w.Log.Format, "auto"},
			{"Log.SlogLevel()", w.Log.SlogLevel(), slog.LevelInfo},
			{"Concurrency", w.Concurrency, 4},
			{"Queues", w.Queues, map[string]int{"publish": 6, "ops": 3, "backfill": 1}},
			{"ShutdownTimeout", w.ShutdownTimeout, 30 * time.Second},
			{"HTTPAddr", w.HTTPAddr, "127.0.0.1:9090"},
			{"RecordTTL", w.RecordTTL, 720 * time.Hour},
		})
	})
	t.Run("enqueue", func(t *testing.T) {
		c := load(t, config.NewEnqueue(), nil)
		if err := c.Validate(); err != nil {
			t.Fatalf("Validate() = %v", err)
		}
		checkFields(t, []field{
			{"Redis.URL", string(c.Redis.URL), "redis://127.0.0.1:6379/0"},
			{"Registry.Host", c.Registry.Host, "r8.im"},
			{"Registry.Token", string(c.Registry.Token), ""},
			{"Log.Level", c.Log.Level, "info"},
			{"Log.Format", c.Log.Format, "auto"},
			{"RecordTTL", c.RecordTTL, 720 * time.Hour},
		})
	})
	t.Run("r8im", func(t *testing.T) {
		c := load(t, config.NewR8im(), nil)
		if err := c.Validate(); err != nil {
			t.Fatalf("Validate() = %v", err)
		}
		checkFields(t, []field{
			{"Registry.Host", c.Registry.Host, "r8.im"},
			{"Registry.Token", string(c.Registry.Token), ""},
			{"Registry.DockerConfig", c.Registry.DockerConfig, ""},
			{"Registry.Insecure", c.Registry.Insecure, false},
		})
	})
	t.Run("exported constants", func(t *testing.T) {
		checkFields(t, []field{
			{"DefaultRedisURL", config.DefaultRedisURL, "redis://127.0.0.1:6379/0"},
			{"DefaultRegistry", config.DefaultRegistry, "r8.im"},
			{"DefaultRecordTTL", config.DefaultRecordTTL, 720 * time.Hour},
			{"DefaultS3ChunkSize", int64(config.DefaultS3ChunkSize), int64(16 << 20)},
			{"DefaultS3Concurrency", config.DefaultS3Concurrency, 8},
			{"DefaultQueues", config.DefaultQueues, map[string]int{"publish": 6, "ops": 3, "backfill": 1}},
		})
	})
	t.Run("no environment without Load is still the defaults", func(t *testing.T) {
		w := config.NewWorker()
		if err := w.Validate(); err != nil {
			t.Fatalf("Validate() on a fresh NewWorker() = %v", err)
		}
	})
}

// Each Worker must own its queue map: changing one must not reach the
// package default or another configuration.
func TestDefaultQueuesAreNotShared(t *testing.T) {
	want := map[string]int{"publish": 6, "ops": 3, "backfill": 1}
	a := loadWorker(t, nil)
	a.Queues["publish"] = 99
	a.Queues["extra"] = 1
	if !reflect.DeepEqual(config.DefaultQueues, want) {
		t.Errorf("DefaultQueues = %v after editing a worker's queues, want %v", config.DefaultQueues, want)
	}
	if b := loadWorker(t, nil); !reflect.DeepEqual(b.Queues, want) {
		t.Errorf("a new worker's Queues = %v, want %v", b.Queues, want)
	}
	if c := loadWorker(t, env{"R8IM_QUEUES": "ops=2"}); !reflect.DeepEqual(config.DefaultQueues, want) {
		t.Errorf("DefaultQueues = %v after R8IM_QUEUES=ops=2 (worker has %v), want %v", config.DefaultQueues, c.Queues, want)
	}
}

func TestWorkerLoadsEnvironment(t *testing.T) {
	dockerDir := t.TempDir()
	tests := []struct {
		name string
		env  env
		got  func(*config.Worker) any
		want any
	}{
		{"REDIS_URL", env{"REDIS_URL": "redis://redis.internal:6380/4"},
			func(w *config.Worker) any { return string(w.Redis.URL) }, "redis://redis.internal:6380/4"},
		{"R8IM_REGISTRY", env{"R8IM_REGISTRY": "registry.example.com:5000"},
			func(w *config.Worker) any { return w.Registry.Host }, "registry.example.com:5000"},
		{"COG_TOKEN", env{"COG_TOKEN": "r8_abc123"},
			func(w *config.Worker) any { return string(w.Registry.Token) }, "r8_abc123"},
		{"DOCKER_CONFIG", env{"DOCKER_CONFIG": dockerDir},
			func(w *config.Worker) any { return w.Registry.DockerConfig }, dockerDir},
		{"R8IM_INSECURE", env{"R8IM_INSECURE": "true"},
			func(w *config.Worker) any { return w.Registry.Insecure }, true},
		{"AWS_ENDPOINT_URL_S3", env{"AWS_ENDPOINT_URL_S3": "http://minio:9000"},
			func(w *config.Worker) any { return w.S3.Endpoint }, "http://minio:9000"},
		{"AWS_ENDPOINT_URL", env{"AWS_ENDPOINT_URL": "https://generic.example.com"},
			func(w *config.Worker) any { return w.S3.Endpoint }, "https://generic.example.com"},
		{"AWS_ENDPOINT_URL_S3 wins over AWS_ENDPOINT_URL",
			env{"AWS_ENDPOINT_URL_S3": "http://minio:9000", "AWS_ENDPOINT_URL": "https://generic.example.com"},
			func(w *config.Worker) any { return w.S3.Endpoint }, "http://minio:9000"},
		{"empty AWS_ENDPOINT_URL_S3 counts as unset",
			env{"AWS_ENDPOINT_URL_S3": "", "AWS_ENDPOINT_URL": "https://generic.example.com"},
			func(w *config.Worker) any { return w.S3.Endpoint }, "https://generic.example.com"},
		{"AWS_REGION", env{"AWS_REGION": "eu-west-1"},
			func(w *config.Worker) any { return w.S3.Region }, "eu-west-1"},
		{"AWS_DEFAULT_REGION", env{"AWS_DEFAULT_REGION": "ap-south-1"},
			func(w *config.Worker) any { return w.S3.Region }, "ap-south-1"},
		{"AWS_REGION wins over AWS_DEFAULT_REGION", env{"AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "ap-south-1"},
			func(w *config.Worker) any { return w.S3.Region }, "eu-west-1"},
		{"R8IM_S3_PATH_STYLE", env{"R8IM_S3_PATH_STYLE": "true"},
			func(w *config.Worker) any { return w.S3.PathStyle }, true},
		{"R8IM_S3_CHUNK_SIZE IEC", env{"R8IM_S3_CHUNK_SIZE": "32MiB"},
			func(w *config.Worker) any { return w.S3.ChunkSize }, int64(32 << 20)},
		{"R8IM_S3_CHUNK_SIZE SI", env{"R8IM_S3_CHUNK_SIZE": "64MB"},
			func(w *config.Worker) any { return w.S3.ChunkSize }, int64(64_000_000)},
		{"R8IM_S3_CHUNK_SIZE bytes", env{"R8IM_S3_CHUNK_SIZE": "2097152"},
			func(w *config.Worker) any { return w.S3.ChunkSize }, int64(2 << 20)},
		{"R8IM_S3_CONCURRENCY", env{"R8IM_S3_CONCURRENCY": "16"},
			func(w *config.Worker) any { return w.S3.Concurrency }, 16},
		{"AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY", env{"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI"},
			func(w *config.Worker) any { return [2]string{string(w.S3.AccessKeyID), string(w.S3.SecretAccessKey)} },
			[2]string{"AKIDEXAMPLE", "wJalrXUtnFEMI"}},
		{"AWS_SESSION_TOKEN", env{"AWS_SESSION_TOKEN": "FwoGZXIvYXdzEXAMPLE"},
			func(w *config.Worker) any { return string(w.S3.SessionToken) }, "FwoGZXIvYXdzEXAMPLE"},
		{"R8IM_LOG_LEVEL", env{"R8IM_LOG_LEVEL": "debug"},
			func(w *config.Worker) any { return [2]any{w.Log.Level, w.Log.SlogLevel()} }, [2]any{"debug", slog.LevelDebug}},
		{"R8IM_LOG_FORMAT", env{"R8IM_LOG_FORMAT": "json"},
			func(w *config.Worker) any { return w.Log.Format }, "json"},
		{"R8IM_CONCURRENCY", env{"R8IM_CONCURRENCY": "12"},
			func(w *config.Worker) any { return w.Concurrency }, 12},
		{"R8IM_QUEUES replaces the default queues", env{"R8IM_QUEUES": "publish=1,ops=2"},
			func(w *config.Worker) any { return w.Queues }, map[string]int{"publish": 1, "ops": 2}},
		{"R8IM_SHUTDOWN_TIMEOUT", env{"R8IM_SHUTDOWN_TIMEOUT": "2m"},
			func(w *config.Worker) any { return w.ShutdownTimeout }, 2 * time.Minute},
		{"R8IM_HTTP_ADDR", env{"R8IM_HTTP_ADDR": ":8080"},
			func(w *config.Worker) any { return w.HTTPAddr }, ":8080"},
		{"R8IM_RECORD_TTL", env{"R8IM_RECORD_TTL": "48h"},
			func(w *config.Worker) any { return w.RecordTTL }, 48 * time.Hour},
		{"unrelated variables are ignored", env{"R8IM_UNKNOWN": "x", "PATH": "/bin"},
			func(w *config.Worker) any { return w.Concurrency }, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := loadWorker(t, tt.env)
			if got := tt.got(w); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("with env %v: got %#v, want %#v", tt.env, got, tt.want)
			}
		})
	}
}

func TestEnqueueAndR8imLoadEnvironment(t *testing.T) {
	dockerDir := t.TempDir()
	e := env{
		"REDIS_URL":       "rediss://redis.internal:6380/2",
		"R8IM_REGISTRY":   "localhost:5000",
		"COG_TOKEN":       "r8_tok",
		"DOCKER_CONFIG":   dockerDir,
		"R8IM_INSECURE":   "1",
		"R8IM_LOG_LEVEL":  "warn",
		"R8IM_LOG_FORMAT": "text",
		"R8IM_RECORD_TTL": "2h",
	}
	t.Run("enqueue", func(t *testing.T) {
		c := load(t, config.NewEnqueue(), e)
		if err := c.Validate(); err != nil {
			t.Fatalf("Validate() = %v", err)
		}
		checkFields(t, []field{
			{"Redis.URL", string(c.Redis.URL), e["REDIS_URL"]},
			{"Registry.Host", c.Registry.Host, e["R8IM_REGISTRY"]},
			{"Registry.Token", string(c.Registry.Token), e["COG_TOKEN"]},
			{"Registry.DockerConfig", c.Registry.DockerConfig, dockerDir},
			{"Registry.Insecure", c.Registry.Insecure, true},
			{"Log.Level", c.Log.Level, e["R8IM_LOG_LEVEL"]},
			{"Log.Format", c.Log.Format, e["R8IM_LOG_FORMAT"]},
			{"RecordTTL", c.RecordTTL, 2 * time.Hour},
		})
	})
	t.Run("r8im", func(t *testing.T) {
		c := load(t, config.NewR8im(), e)
		if err := c.Validate(); err != nil {
			t.Fatalf("Validate() = %v", err)
		}
		checkFields(t, []field{
			{"Registry.Host", c.Registry.Host, e["R8IM_REGISTRY"]},
			{"Registry.Token", string(c.Registry.Token), e["COG_TOKEN"]},
			{"Registry.DockerConfig", c.Registry.DockerConfig, dockerDir},
			{"Registry.Insecure", c.Registry.Insecure, true},
		})
	})
}

func TestFlagsOverrideEnvironment(t *testing.T) {
	e := env{
		"R8IM_REGISTRY":       "env.example.com",
		"COG_TOKEN":           "env-token",
		"R8IM_CONCURRENCY":    "7",
		"R8IM_QUEUES":         "publish=1,ops=2",
		"R8IM_LOG_LEVEL":      "debug",
		"R8IM_INSECURE":       "true",
		"R8IM_S3_CHUNK_SIZE":  "32MiB",
		"AWS_ENDPOINT_URL_S3": "http://env-minio:9000",
		"AWS_REGION":          "eu-west-1",
		"REDIS_URL":           "redis://env-redis:6379/1",
	}
	tests := []struct {
		name string
		args []string
		env  env
		got  func(*config.Worker) any
		want any
	}{
		{"-r wins", []string{"-r", "flag.example.com"}, e,
			func(w *config.Worker) any { return w.Registry.Host }, "flag.example.com"},
		{"--registry wins", []string{"--registry=flag.example.com"}, e,
			func(w *config.Worker) any { return w.Registry.Host }, "flag.example.com"},
		{"-t wins", []string{"-t", "flag-token"}, e,
			func(w *config.Worker) any { return string(w.Registry.Token) }, "flag-token"},
		{"-c wins", []string{"-c", "9"}, e,
			func(w *config.Worker) any { return w.Concurrency }, 9},
		{"--concurrency wins", []string{"--concurrency=10"}, e,
			func(w *config.Worker) any { return w.Concurrency }, 10},
		{"--queues replaces the environment's queues", []string{"--queues", "backfill=5"}, e,
			func(w *config.Worker) any { return w.Queues }, map[string]int{"backfill": 5}},
		{"--redis-url wins", []string{"--redis-url", "redis://flag-redis:6379/2"}, e,
			func(w *config.Worker) any { return string(w.Redis.URL) }, "redis://flag-redis:6379/2"},
		{"--s3-endpoint wins over both endpoint variables",
			[]string{"--s3-endpoint", "http://flag-minio:9000"}, e.with("AWS_ENDPOINT_URL", "http://generic:9000"),
			func(w *config.Worker) any { return w.S3.Endpoint }, "http://flag-minio:9000"},
		{"--s3-region wins", []string{"--s3-region", "us-west-2"}, e.with("AWS_DEFAULT_REGION", "ap-south-1"),
			func(w *config.Worker) any { return w.S3.Region }, "us-west-2"},
		{"--s3-chunk-size wins", []string{"--s3-chunk-size", "64MiB"}, e,
			func(w *config.Worker) any { return w.S3.ChunkSize }, int64(64 << 20)},
		{"a flag set to its default still wins", []string{"--log-level", "info"}, e,
			func(w *config.Worker) any { return w.Log.Level }, "info"},
		{"--insecure=false wins over R8IM_INSECURE=true", []string{"--insecure=false"}, e,
			func(w *config.Worker) any { return w.Registry.Insecure }, false},
		{"bare --s3-path-style means true", []string{"--s3-path-style"}, e.with("R8IM_S3_PATH_STYLE", "false"),
			func(w *config.Worker) any { return w.S3.PathStyle }, true},
		{"environment applies to flags not given", []string{"-r", "flag.example.com"}, e,
			func(w *config.Worker) any {
				return []any{w.Concurrency, string(w.Registry.Token), w.Log.Level, w.S3.Region, string(w.Redis.URL)}
			},
			[]any{7, e["COG_TOKEN"], e["R8IM_LOG_LEVEL"], e["AWS_REGION"], e["REDIS_URL"]}},
		{"a flag hides an unparseable variable for the same setting", []string{"-c", "5"}, e.with("R8IM_CONCURRENCY", "abc"),
			func(w *config.Worker) any { return w.Concurrency }, 5},
		{"flags without environment", []string{"-c", "3", "--http-addr", ":9999", "--record-ttl", "3h", "--shutdown-timeout", "1m"}, nil,
			func(w *config.Worker) any { return []any{w.Concurrency, w.HTTPAddr, w.RecordTTL, w.ShutdownTimeout} },
			[]any{3, ":9999", 3 * time.Hour, time.Minute}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := loadWorker(t, tt.env, tt.args...)
			if got := tt.got(w); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("args %q: got %#v, want %#v", tt.args, got, tt.want)
			}
		})
	}

	t.Run("enqueue short flags", func(t *testing.T) {
		c := load(t, config.NewEnqueue(), e, "-r", "flag.example.com", "-t", "flag-token")
		if err := c.Validate(); err != nil {
			t.Fatalf("Validate() = %v", err)
		}
		checkFields(t, []field{
			{"Registry.Host", c.Registry.Host, "flag.example.com"},
			{"Registry.Token", string(c.Registry.Token), "flag-token"},
			{"Redis.URL", string(c.Redis.URL), e["REDIS_URL"]},
		})
	})
	t.Run("r8im short flags", func(t *testing.T) {
		c := load(t, config.NewR8im(), e, "-t", "flag-token")
		if err := c.Validate(); err != nil {
			t.Fatalf("Validate() = %v", err)
		}
		checkFields(t, []field{
			{"Registry.Host", c.Registry.Host, e["R8IM_REGISTRY"]},
			{"Registry.Token", string(c.Registry.Token), "flag-token"},
		})
	})
	t.Run("flags live beside a command's own flags", func(t *testing.T) {
		fs := newFlagSet(t)
		verbose := fs.BoolP("verbose", "v", false, "")
		w := config.NewWorker()
		w.RegisterFlags(fs)
		if err := fs.Parse([]string{"-v", "-c", "2", "positional"}); err != nil {
			t.Fatal(err)
		}
		w.Load(e.lookup)
		checkFields(t, []field{
			{"verbose", *verbose, true},
			{"Concurrency", w.Concurrency, 2},
			{"Args", fs.Args(), []string{"positional"}},
		})
	})
}

// badSetting is one invalid value and the names its problems must carry.
type badSetting struct {
	name  string
	env   string // variable set to value
	value string
	// flag, when set, must be named by every problem as well. Values that do
	// not parse at all are reported against the variable that was set.
	flag  string
	kinds []string // configurations that carry the setting
}

func badSettings(t *testing.T) []badSetting {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "config.json")
	if err := os.WriteFile(file, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	return []badSetting{
		{"concurrency not a number", "R8IM_CONCURRENCY", "abc", "", workerKinds},
		{"concurrency zero", "R8IM_CONCURRENCY", "0", "--concurrency", workerKinds},
		{"concurrency too high", "R8IM_CONCURRENCY", "1025", "--concurrency", workerKinds},
		{"queues typo", "R8IM_QUEUES", "pubish=1", "--queues", workerKinds},
		{"queues zero weight", "R8IM_QUEUES", "publish=0", "--queues", workerKinds},
		{"queues not key=value", "R8IM_QUEUES", "publish", "", workerKinds},
		{"redis wrong scheme", "REDIS_URL", "http://x", "--redis-url", redisKinds},
		{"redis not a URL", "REDIS_URL", "localhost:6379", "--redis-url", redisKinds},
		{"redis sentinel without master", "REDIS_URL", "redis-sentinel://h1:26379/0", "--redis-url", redisKinds},
		{"access key without secret", "AWS_ACCESS_KEY_ID", "AKIDEXAMPLE", "", workerKinds},
		{"secret without access key", "AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI", "", workerKinds},
		{"log level", "R8IM_LOG_LEVEL", "loud", "--log-level", redisKinds},
		{"log format", "R8IM_LOG_FORMAT", "xml", "--log-format", redisKinds},
		{"chunk too small", "R8IM_S3_CHUNK_SIZE", "1KiB", "--s3-chunk-size", workerKinds},
		{"chunk too large", "R8IM_S3_CHUNK_SIZE", "2GiB", "--s3-chunk-size", workerKinds},
		{"chunk not a size", "R8IM_S3_CHUNK_SIZE", "lots", "", workerKinds},
		{"s3 concurrency not a number", "R8IM_S3_CONCURRENCY", "many", "", workerKinds},
		{"s3 concurrency zero", "R8IM_S3_CONCURRENCY", "0", "--s3-concurrency", workerKinds},
		{"s3 concurrency too high", "R8IM_S3_CONCURRENCY", "65", "--s3-concurrency", workerKinds},
		{"s3 endpoint scheme", "AWS_ENDPOINT_URL_S3", "ftp://minio:21", "--s3-endpoint", workerKinds},
		{"s3 endpoint without host", "AWS_ENDPOINT_URL", "http://", "--s3-endpoint", workerKinds},
		{"http addr", "R8IM_HTTP_ADDR", "nope", "--http-addr", workerKinds},
		{"http addr without port", "R8IM_HTTP_ADDR", "127.0.0.1:", "--http-addr", workerKinds},
		{"record ttl short", "R8IM_RECORD_TTL", "1m", "--record-ttl", redisKinds},
		{"record ttl not a duration", "R8IM_RECORD_TTL", "forever", "", redisKinds},
		{"shutdown timeout negative", "R8IM_SHUTDOWN_TIMEOUT", "-1s", "--shutdown-timeout", workerKinds},
		{"shutdown timeout not a duration", "R8IM_SHUTDOWN_TIMEOUT", "soon", "", workerKinds},
		{"shutdown timeout zero", "R8IM_SHUTDOWN_TIMEOUT", "0s", "--shutdown-timeout", workerKinds},
		{"registry host", "R8IM_REGISTRY", "bad host!", "--registry", allKinds},
		{"registry with scheme", "R8IM_REGISTRY", "https://r8.im", "--registry", allKinds},
		{"docker config missing", "DOCKER_CONFIG", filepath.Join(dir, "missing"), "--docker-config", allKinds},
		{"docker config is a file", "DOCKER_CONFIG", file, "--docker-config", allKinds},
		{"insecure not a bool", "R8IM_INSECURE", "maybe", "", allKinds},
	}
}

func TestValidateNamesEachBadSetting(t *testing.T) {
	for _, bad := range badSettings(t) {
		for _, k := range kinds {
			t.Run(k.name+"/"+bad.name, func(t *testing.T) {
				e := env{bad.env: bad.value}
				err := load(t, k.new(), e).Validate()
				if !slices.Contains(bad.kinds, k.name) {
					if err != nil {
						t.Fatalf("%s has no %s setting, yet %s=%q gives %v", k.name, bad.env, bad.env, bad.value, err)
					}
					return
				}
				ps := problems(t, err)
				for _, p := range ps {
					if !strings.Contains(p.Setting, bad.env) {
						t.Errorf("problem %q for %s=%q does not name %s", p, bad.env, bad.value, bad.env)
					}
					if bad.flag != "" && !strings.Contains(p.Setting, bad.flag) {
						t.Errorf("problem %q for %s=%q does not name %s", p, bad.env, bad.value, bad.flag)
					}
					if strings.TrimSpace(p.Message) == "" {
						t.Errorf("problem for %s=%q has an empty message", bad.env, bad.value)
					}
				}
				if len(ps) != 1 {
					t.Errorf("%s=%q gives %d problems, want 1: %v", bad.env, bad.value, len(ps), err)
				}
			})
		}
	}
}

// A value that does not parse leaves the setting at its default, so the only
// problem reported is the parse failure itself.
func TestUnparseableValueKeepsDefault(t *testing.T) {
	def := config.NewWorker()
	tests := []struct {
		env  env
		got  func(*config.Worker) any
		want any
	}{
		{env{"R8IM_CONCURRENCY": "abc"}, func(w *config.Worker) any { return w.Concurrency }, def.Concurrency},
		{env{"R8IM_S3_CONCURRENCY": "many"}, func(w *config.Worker) any { return w.S3.Concurrency }, def.S3.Concurrency},
		{env{"R8IM_SHUTDOWN_TIMEOUT": "soon"}, func(w *config.Worker) any { return w.ShutdownTimeout }, def.ShutdownTimeout},
		{env{"R8IM_RECORD_TTL": "forever"}, func(w *config.Worker) any { return w.RecordTTL }, def.RecordTTL},
		{env{"R8IM_S3_CHUNK_SIZE": "lots"}, func(w *config.Worker) any { return w.S3.ChunkSize }, def.S3.ChunkSize},
		{env{"R8IM_QUEUES": "publish"}, func(w *config.Worker) any { return w.Queues }, def.Queues},
		{env{"R8IM_INSECURE": "maybe"}, func(w *config.Worker) any { return w.Registry.Insecure }, def.Registry.Insecure},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.env), func(t *testing.T) {
			w := load(t, config.NewWorker(), tt.env)
			if got := tt.got(w); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("after %v: got %#v, want the default %#v", tt.env, got, tt.want)
			}
			if ps := problems(t, w.Validate()); len(ps) != 1 {
				t.Errorf("after %v: %d problems, want 1: %v", tt.env, len(ps), ps)
			}
		})
	}
}

// The same bad values given as flags name the flag.
func TestValidateNamesBadFlags(t *testing.T) {
	tests := []struct {
		args []string
		flag string
	}{
		{[]string{"-c", "0"}, "--concurrency"},
		{[]string{"--queues", "pubish=1"}, "--queues"},
		{[]string{"--redis-url", "http://x"}, "--redis-url"},
		{[]string{"--log-level", "loud"}, "--log-level"},
		{[]string{"--s3-chunk-size", "1KiB"}, "--s3-chunk-size"},
		{[]string{"--http-addr", "nope"}, "--http-addr"},
		{[]string{"--record-ttl", "1m"}, "--record-ttl"},
		{[]string{"-r", "bad host!"}, "--registry"},
		{[]string{"--registry", ""}, "--registry"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			err := load(t, config.NewWorker(), nil, tt.args...).Validate()
			ps := problems(t, err)
			if len(ps) != 1 {
				t.Errorf("got %d problems, want 1: %v", len(ps), err)
			}
			for _, p := range ps {
				if !strings.Contains(p.Setting, tt.flag) {
					t.Errorf("problem %q does not name %s", p, tt.flag)
				}
			}
		})
	}
}

// Validate reports every problem at once: all the bad values together give
// exactly the problems each gives on its own.
func TestValidateReportsEveryProblemAtOnce(t *testing.T) {
	bad := env{
		"R8IM_CONCURRENCY":   "abc",
		"R8IM_QUEUES":        "pubish=1",
		"REDIS_URL":          "http://x",
		"AWS_ACCESS_KEY_ID":  "AKIDEXAMPLE",
		"R8IM_LOG_LEVEL":     "loud",
		"R8IM_S3_CHUNK_SIZE": "1KiB",
		"R8IM_HTTP_ADDR":     "nope",
		"R8IM_RECORD_TTL":    "1m",
		"R8IM_REGISTRY":      "bad host!",
	}
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			var want []string
			named := map[string]bool{}
			for name, value := range bad {
				err := load(t, k.new(), env{name: value}).Validate()
				if err == nil {
					continue // k has no such setting
				}
				for _, p := range problems(t, err) {
					want = append(want, p.String())
				}
				named[name] = true
			}
			if len(want) == 0 {
				t.Fatalf("none of the bad values is a problem for %s", k.name)
			}
			if k.name == "worker" && len(named) != len(bad) {
				t.Errorf("worker rejected only %d of the %d bad variables on their own", len(named), len(bad))
			}

			err := load(t, k.new(), bad).Validate()
			ps := problems(t, err)
			got := make([]string, len(ps))
			for i, p := range ps {
				got[i] = p.String()
			}
			slices.Sort(got)
			slices.Sort(want)
			if len(got) != len(want) {
				t.Errorf("got %d problems, want %d (one set per bad variable):\n%v", len(got), len(want), err)
			}
			if !slices.Equal(got, want) {
				t.Errorf("problems together:\n  %s\nwant each alone:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
			}
			count := fmt.Sprintf("(%d problem", len(ps))
			if len(ps) != 1 {
				count += "s"
			}
			if !strings.Contains(err.Error(), count+"):") {
				t.Errorf("error text does not count %d problems: %v", len(ps), err)
			}
			for name := range named {
				if !slices.ContainsFunc(ps, func(p config.Problem) bool { return strings.Contains(p.Setting, name) }) {
					t.Errorf("no problem names %s", name)
				}
			}
		})
	}
}

// Fields may be set in code after Load; Validate checks them too.
func TestValidateChecksFieldsSetDirectly(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*config.Worker)
		setting string
	}{
		{"no queues", func(w *config.Worker) { w.Queues = nil }, "R8IM_QUEUES"},
		{"empty registry", func(w *config.Worker) { w.Registry.Host = "" }, "R8IM_REGISTRY"},
		{"empty log format", func(w *config.Worker) { w.Log.Format = "" }, "R8IM_LOG_FORMAT"},
		{"zero record ttl", func(w *config.Worker) { w.RecordTTL = 0 }, "R8IM_RECORD_TTL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := loadWorker(t, nil)
			tt.mutate(w)
			ps := problems(t, w.Validate())
			if len(ps) != 1 || !strings.Contains(ps[0].Setting, tt.setting) {
				t.Errorf("problems = %v, want one naming %s", ps, tt.setting)
			}
		})
	}
}

func TestValidationErrorText(t *testing.T) {
	one := &config.ValidationError{Problems: []config.Problem{{Setting: "A_VAR", Message: "is wrong"}}}
	two := &config.ValidationError{Problems: []config.Problem{{Setting: "A_VAR", Message: "is wrong"}, {Setting: "B_VAR", Message: "too"}}}
	checkFields(t, []field{
		{"one problem", one.Error(), "invalid configuration (1 problem):\n  - A_VAR: is wrong"},
		{"two problems", two.Error(), "invalid configuration (2 problems):\n  - A_VAR: is wrong\n  - B_VAR: too"},
	})
}

func TestRedisOptions(t *testing.T) {
	tests := []struct {
		url              string
		addrs            []string
		db               int
		username         string
		password         string
		sentinelPassword string
		master           string
		tls              bool
	}{
		{url: config.DefaultRedisURL, addrs: []string{"127.0.0.1:6379"}},
		{url: "redis://redis.internal:6380/5", addrs: []string{"redis.internal:6380"}, db: 5},
		{url: "redis://redis.internal", addrs: []string{"redis.internal:6379"}},
		{url: "rediss://redis.internal:6380/1", addrs: []string{"redis.internal:6380"}, db: 1, tls: true},
		{url: "redis://:pw@h:1/3", addrs: []string{"h:1"}, db: 3, password: "pw"},
		{url: "redis://app:s%40cret@h:6379/0", addrs: []string{"h:6379"}, username: "app", password: "s@cret"},
		{url: "redis-sentinel://:pw@h1:26379,h2:26379/2?master=mymaster",
			addrs: []string{"h1:26379", "h2:26379"}, db: 2, password: "pw", sentinelPassword: "pw", master: "mymaster"},
		{url: "redis-sentinel://s1:26379/0?master=m", addrs: []string{"s1:26379"}, master: "m"},
		{url: "redis-sentinel://s1:26379/?master=m", addrs: []string{"s1:26379"}, master: "m"},
		{url: "redis-sentinel://:pw@h1:26379,h2:26379?master=mymaster",
			addrs: []string{"h1:26379", "h2:26379"}, password: "pw", sentinelPassword: "pw", master: "mymaster"},
		{url: "redis-sentinel://:p%40ss@h1:26379/0?master=m",
			addrs: []string{"h1:26379"}, password: "p@ss", sentinelPassword: "p@ss", master: "m"},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			o, err := redisOptions(tt.url)
			if err != nil {
				t.Fatalf("Options() error: %v", err)
			}
			checkFields(t, []field{
				{"Addrs", o.Addrs, tt.addrs},
				{"DB", o.DB, tt.db},
				{"Username", o.Username, tt.username},
				{"Password", o.Password, tt.password},
				{"SentinelPassword", o.SentinelPassword, tt.sentinelPassword},
				{"MasterName", o.MasterName, tt.master},
				{"TLSConfig set", o.TLSConfig != nil, tt.tls},
			})
		})
	}
}

func TestRedisOptionsErrors(t *testing.T) {
	tests := []struct {
		name    string
		url     string
		mention string // the error must mention this part of the input
	}{
		{"sentinel missing master", "redis-sentinel://h1:26379,h2:26379/2", "master"},
		{"sentinel empty master", "redis-sentinel://h1:26379/2?master=", "master"},
		{"sentinel bad db", "redis-sentinel://h1:26379/x?master=m", `"x"`},
		{"sentinel negative db", "redis-sentinel://h1:26379/-1?master=m", `"-1"`},
		{"sentinel db with trailing junk", "redis-sentinel://h1:26379/2abc?master=m", `"2abc"`},
		{"sentinel without addresses", "redis-sentinel:///0?master=m", "sentinel"},
		{"sentinel bad query", "redis-sentinel://h1:26379/0?master=m&x=%zz", "%zz"},
		{"redis bad db", "redis://h:6379/x", `"x"`},
		{"redis unknown option", "redis://h:6379/0?bogus=1", "bogus"},
		{"unsupported scheme", "http://h:6379/0", `"http"`},
		{"unix scheme", "unix:///run/redis.sock", `"unix"`},
		{"no scheme", "localhost:6379", "not a URL"},
		{"empty", "", "redis://"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := redisOptions(tt.url)
			if err == nil {
				t.Fatalf("Options(%q) = %+v, want an error", tt.url, o)
			}
			if !strings.Contains(err.Error(), tt.mention) {
				t.Errorf("Options(%q) error %q does not mention %q", tt.url, err, tt.mention)
			}
		})
	}
}

func TestRedactURL(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		want   string
		secret string // must not survive redaction
	}{
		{"user and password", "redis://user:hunter2@redis.internal:6379/0",
			"redis://user:REDACTED@redis.internal:6379/0", "hunter2"},
		{"password only", "redis://:hunter2@redis.internal:6379/0",
			"redis://:REDACTED@redis.internal:6379/0", "hunter2"},
		{"bare user is a secret", "redis://hunter2@redis.internal:6379/0",
			"redis://REDACTED@redis.internal:6379/0", "hunter2"},
		{"password holding @", "redis://:hun@ter2@redis.internal:6379/0",
			"redis://:REDACTED@redis.internal:6379/0", "ter2"},
		{"sentinel, many hosts", "redis-sentinel://:hunter2@h1:26379,h2:26379/2?master=mymaster",
			"redis-sentinel://:REDACTED@h1:26379,h2:26379/2?master=mymaster", "hunter2"},
		{"no path", "redis://:hunter2@h", "redis://:REDACTED@h", "hunter2"},
		{"no user info", "redis://redis.internal:6379/0", "redis://redis.internal:6379/0", ""},
		// An "@" after the host masks more than needed: wider, never narrower.
		{"@ in the path only", "http://h/a@b", "http://REDACTED@b", ""},
		{"@ in the query only", "redis://h:6379/0?x=a@b", "redis://h:REDACTED@b", ""},
		{"not a URL, with @", "hunter2@redis.internal", "REDACTED", "hunter2"},
		{"not a URL, no @", "redis.internal:6379", "redis.internal:6379", ""},
		{"empty", "", "", ""},
		{"password holding /", "redis://:hun/ter2@h:6379/0", "redis://:REDACTED@h:6379/0", "hun/ter2"},
		{"password holding #", "redis://:hun#ter2@h:6379/0", "redis://:REDACTED@h:6379/0", "hun#ter2"},
		{"sentinel, password in the query", "redis-sentinel://h1:26379,h2:26379/0?master=x&password=hunter2",
			"redis-sentinel://h1:26379,h2:26379/0?master=x&password=REDACTED", "hunter2"},
		{"password in the query, with user info", "redis://u:pw@h:6379/0?password=hunter2&dial_timeout=3",
			"redis://u:REDACTED@h:6379/0?password=REDACTED&dial_timeout=3", "hunter2"},
		{"sentinel_password and others", "redis-sentinel://h:26379?master=x&sentinel_password=hunter2&Sentinel_Pass%77ord=hunter3&token=hunter4",
			"redis-sentinel://h:26379?master=x&sentinel_password=REDACTED&Sentinel_Pass%77ord=REDACTED&token=REDACTED", "hunter"},
		{"secret value holding #", "redis://h?password=hun#ter2", "redis://h?password=REDACTED", "ter2"},
		{"empty password parameter", "redis://h?password=&db=1", "redis://h?password=&db=1", ""},
		{"not a URL, query password", "h:6379?password=hunter2", "h:6379?password=REDACTED", "hunter2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := config.RedactURL(tt.in)
			if got != tt.want {
				t.Errorf("RedactURL(%q) = %q, want %q", tt.in, got, tt.want)
			}
			if tt.secret != "" && strings.Contains(got, tt.secret) {
				t.Errorf("RedactURL(%q) = %q still holds %q", tt.in, got, tt.secret)
			}
		})
	}
}

// Distinctive secret values, so that finding one in output is never chance.
const (
	cogToken     = "cogtok-5b1e9d0a"
	accessKeyID  = "AKIAEXAMPLE7Q2ZK"
	secretKey    = "awssecret-94fa0c1e"
	sessionToken = "awssession-c3d8e172"
	redisPass    = "redispass-6a2f71b3"
)

// renderings is every way a configuration gets printed or logged.
func renderings(t *testing.T, cfg configurable) map[string]string {
	t.Helper()
	var values []string
	for k, v := range cfg.Redacted() {
		values = append(values, k+"="+v)
	}
	var jsonOut, textOut bytes.Buffer
	slog.New(slog.NewJSONHandler(&jsonOut, nil)).Info("starting", slog.Any("config", cfg))
	slog.New(slog.NewTextHandler(&textOut, nil)).Info("starting", "config", cfg)
	out := map[string]string{
		"Redacted()": strings.Join(values, "\n"),
		"%v":         fmt.Sprintf("%v", cfg),
		"%+v":        fmt.Sprintf("%+v", cfg),
		"%s":         fmt.Sprintf("%s", cfg),
		"Sprint":     fmt.Sprint(cfg),
		"slog JSON":  jsonOut.String(),
		"slog text":  textOut.String(),
	}
	if w, ok := cfg.(*config.Worker); ok {
		out["%v of a Worker value"] = fmt.Sprintf("%v", *w)
	}
	return out
}

func TestSecretsAreRedacted(t *testing.T) {
	redisURLs := []struct {
		name string
		url  string
		host string // stays readable
	}{
		{"redis password", "redis://:" + redisPass + "@redis.internal:6379/0", "redis.internal:6379"},
		{"redis user and password", "redis://app:" + redisPass + "@redis.internal:6379/0", "redis.internal:6379"},
		{"rediss user and password", "rediss://app:" + redisPass + "@redis.internal:6380/1", "redis.internal:6380"},
		{"redis bare user", "redis://" + redisPass + "@redis.internal:6379/0", "redis.internal:6379"},
		{"sentinel", "redis-sentinel://:" + redisPass + "@sentinel-a:26379,sentinel-b:26379/2?master=mymaster",
			"sentinel-a:26379,sentinel-b:26379"},
	}
	secrets := []string{cogToken, accessKeyID, secretKey, sessionToken, redisPass}
	for _, r := range redisURLs {
		for _, k := range kinds {
			t.Run(k.name+"/"+r.name, func(t *testing.T) {
				e := env{
					"COG_TOKEN":             cogToken,
					"AWS_ACCESS_KEY_ID":     accessKeyID,
					"AWS_SECRET_ACCESS_KEY": secretKey,
					"AWS_SESSION_TOKEN":     sessionToken,
					"REDIS_URL":             r.url,
					"R8IM_REGISTRY":         "registry.example.com",
				}
				cfg := load(t, k.new(), e)
				if err := cfg.Validate(); err != nil {
					t.Fatalf("Validate() = %v", err)
				}
				red := cfg.Redacted()

				// The secrets were loaded, and show as set.
				if red["COG_TOKEN"] == "" {
					t.Errorf("Redacted()[COG_TOKEN] is empty, want a mask showing the token is set")
				}
				if w, ok := cfg.(*config.Worker); ok {
					checkFields(t, []field{
						{"Registry.Token", string(w.Registry.Token), cogToken},
						{"S3.AccessKeyID", string(w.S3.AccessKeyID), accessKeyID},
						{"S3.SecretAccessKey", string(w.S3.SecretAccessKey), secretKey},
						{"S3.SessionToken", string(w.S3.SessionToken), sessionToken},
						{"Redis.URL", string(w.Redis.URL), r.url},
					})
					for _, key := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"} {
						if red[key] == "" {
							t.Errorf("Redacted()[%s] is empty, want a mask showing it is set", key)
						}
					}
				}

				// Non-secret parts stay readable.
				if got := red["R8IM_REGISTRY"]; got != e["R8IM_REGISTRY"] {
					t.Errorf("Redacted()[R8IM_REGISTRY] = %q, want %q", got, e["R8IM_REGISTRY"])
				}
				if _, hasRedis := red["REDIS_URL"]; hasRedis && !strings.Contains(red["REDIS_URL"], r.host) {
					t.Errorf("Redacted()[REDIS_URL] = %q, want the host %q readable", red["REDIS_URL"], r.host)
				}

				for how, out := range renderings(t, cfg) {
					if !strings.Contains(out, e["R8IM_REGISTRY"]) {
						t.Errorf("%s does not show the configuration (no %q): %s", how, e["R8IM_REGISTRY"], out)
					}
					for _, s := range secrets {
						if strings.Contains(out, s) {
							t.Errorf("%s leaks %q: %s", how, s, out)
						}
					}
				}
			})
		}
	}
}

// An unset secret stays visibly unset in the redacted form.
func TestUnsetSecretsAreEmpty(t *testing.T) {
	red := load(t, config.NewWorker(), nil).Redacted()
	for _, key := range []string{"COG_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"} {
		v, ok := red[key]
		if !ok {
			t.Errorf("Redacted() has no %s key", key)
		}
		if v != "" {
			t.Errorf("Redacted()[%s] = %q for an unset secret, want \"\"", key, v)
		}
	}
	if got := red["REDIS_URL"]; got != config.DefaultRedisURL {
		t.Errorf("Redacted()[REDIS_URL] = %q, want the default %q unchanged", got, config.DefaultRedisURL)
	}
}

// A malformed secret value must not be echoed in the validation error.
func TestValidationErrorHidesSecrets(t *testing.T) {
	tests := []struct {
		name string
		url  string
	}{
		{"redis bad db", "redis://:" + redisPass + "@redis.internal:6379/x"},
		{"redis unknown option", "redis://:" + redisPass + "@redis.internal:6379/0?bogus=1"},
		{"redis bare user bad db", "redis://" + redisPass + "@redis.internal:6379/x"},
		{"unsupported scheme", "http://:" + redisPass + "@redis.internal:6379/0"},
		{"no scheme", ":" + redisPass + "@redis.internal:6379"},
		{"sentinel missing master", "redis-sentinel://:" + redisPass + "@h1:26379,h2:26379/2"},
		{"sentinel bad db", "redis-sentinel://:" + redisPass + "@h1:26379,h2:26379/x?master=m"},
		{"sentinel bad query", "redis-sentinel://:" + redisPass + "@h1:26379/0?master=m&x=%zz"},
		{"redis bad port", "redis://:" + redisPass + "@redis.internal:notaport/0"},
		{"redis bad escape", "redis://:" + redisPass + "@redis.internal:6379/0%zz"},
	}
	for _, tt := range tests {
		for _, k := range kinds[:2] { // the configurations that carry REDIS_URL
			t.Run(k.name+"/"+tt.name, func(t *testing.T) {
				cfg := load(t, k.new(), env{"REDIS_URL": tt.url, "COG_TOKEN": cogToken})
				err := cfg.Validate()
				ps := problems(t, err)
				if !slices.ContainsFunc(ps, func(p config.Problem) bool { return strings.Contains(p.Setting, "REDIS_URL") }) {
					t.Errorf("no problem names REDIS_URL: %v", err)
				}
				for _, s := range []string{redisPass, cogToken} {
					if strings.Contains(err.Error(), s) {
						t.Errorf("error leaks %q: %v", s, err)
					}
				}
			})
		}
	}
}

// Problems about secret settings never quote the secret.
func TestProblemsDoNotEchoSecrets(t *testing.T) {
	tests := []struct {
		name   string
		env    env
		secret string
	}{
		{"access key without secret", env{"AWS_ACCESS_KEY_ID": accessKeyID}, accessKeyID},
		{"secret without access key", env{"AWS_SECRET_ACCESS_KEY": secretKey}, secretKey},
		{"session token without keys", env{"AWS_SESSION_TOKEN": sessionToken, "AWS_ACCESS_KEY_ID": accessKeyID}, sessionToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := load(t, config.NewWorker(), tt.env).Validate()
			for _, p := range problems(t, err) {
				if strings.Contains(p.Message, tt.secret) || strings.Contains(p.Setting, tt.secret) {
					t.Errorf("problem %q echoes the secret", p)
				}
			}
			if strings.Contains(err.Error(), accessKeyID) || strings.Contains(err.Error(), tt.secret) {
				t.Errorf("error echoes a secret: %v", err)
			}
		})
	}
}

func TestHelpHidesSecrets(t *testing.T) {
	e := env{
		"COG_TOKEN": cogToken,
		"REDIS_URL": "redis://:" + redisPass + "@redis.internal:6379/0",
	}
	const flagToken = "flagtok-0e7d4c"
	for _, k := range kinds {
		for _, args := range [][]string{nil, {"-t", flagToken}} {
			t.Run(fmt.Sprintf("%s/%q", k.name, args), func(t *testing.T) {
				cfg := k.new()
				fs := loadFlags(t, cfg, e, args...)
				if err := cfg.Validate(); err != nil {
					t.Fatalf("Validate() = %v", err)
				}
				usage := fs.FlagUsages()
				for _, want := range []string{"--token", "COG_TOKEN", config.DefaultRegistry} {
					if !strings.Contains(usage, want) {
						t.Errorf("usage lacks %q:\n%s", want, usage)
					}
				}
				for _, s := range []string{cogToken, redisPass, flagToken} {
					if strings.Contains(usage, s) {
						t.Errorf("usage leaks %q:\n%s", s, usage)
					}
				}
			})
		}
	}
}

// flatOptions holds the fields the Redis tests check, from either the plain
// or the failover options that Redis.Options returns.
type flatOptions struct {
	Addrs                                            []string
	DB                                               int
	Username, Password, SentinelPassword, MasterName string
	TLSConfig                                        any
}

func redisOptions(url string) (flatOptions, error) {
	plain, failover, err := config.Redis{URL: config.SecretURL(url)}.Options()
	switch {
	case err != nil:
		return flatOptions{}, err
	case failover != nil:
		o := flatOptions{Addrs: failover.SentinelAddrs, DB: failover.DB, Username: failover.Username,
			Password: failover.Password, SentinelPassword: failover.SentinelPassword, MasterName: failover.MasterName}
		if failover.TLSConfig != nil {
			o.TLSConfig = failover.TLSConfig
		}
		return o, nil
	default:
		o := flatOptions{Addrs: []string{plain.Addr}, DB: plain.DB, Username: plain.Username, Password: plain.Password}
		if plain.TLSConfig != nil {
			o.TLSConfig = plain.TLSConfig
		}
		return o, nil
	}
}
