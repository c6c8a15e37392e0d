package reliability

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/r8im/r8im/config"
	"github.com/r8im/r8im/events"
	"github.com/r8im/r8im/imageops"
	"github.com/r8im/r8im/internal/testenv"
	"github.com/r8im/r8im/jobs"
	"github.com/r8im/r8im/jobs/task"
	"github.com/r8im/r8im/storage"
)

// The hostile corpus: testdata/hostile/{tars,payloads,events}.json. Each
// case names its input and the substring its error must hold, which names
// the problem (and, mostly, the fix). Cases run through the real entry
// points: imageops.Affix against a real registry, the worker's task handler
// through asynq, the HTTP event receiver.

func loadCases[T any](t *testing.T, file string) []T {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "hostile", file))
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var cases []T
	if err := dec.Decode(&cases); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return cases
}

var longRE = regexp.MustCompile(`LONG:(\d+)`)

// expand replaces LONG:n with n bytes of a name ("aaa…").
func expand(s string) string {
	return longRE.ReplaceAllStringFunc(s, func(m string) string {
		n, _ := strconv.Atoi(m[len("LONG:"):])
		return strings.Repeat("a", n)
	})
}

type tarEntry struct {
	Name  string `json:"name"` // LONG:n, MANY:n (n files), MANY-ABS:n (n absolute files)
	Type  string `json:"type"` // file (default), dir, symlink, hardlink, char, block, fifo, sparse
	Link  string `json:"link"`
	Body  string `json:"body"`
	Size  int64  `json:"size"`  // a body of this many bytes instead
	Zeros bool   `json:"zeros"` // that body is zeros (a compression bomb), not random
}

type tarCase struct {
	Name          string     `json:"name"`
	Entries       []tarEntry `json:"entries"`
	Raw           *string    `json:"raw"`
	RawHex        string     `json:"raw_hex"`
	Pad           int        `json:"pad"` // zero bytes appended to raw input
	Compress      string     `json:"compress"`
	CompressAgain string     `json:"compress_again"`
	Truncate      int        `json:"truncate"`   // keep only this many bytes
	CorruptAt     int        `json:"corrupt_at"` // flip the bits of this byte
	AppendCopy    bool       `json:"append_copy"`
	Base          string     `json:"base"`            // instead of the test's base
	Transient     bool       `json:"transient"`       // the error may be retried
	Via           string     `json:"via"`             // "RewriteTar", else imageops.Affix
	MaxEntries    int        `json:"max_entries"`     // limits, as R8IM_MAX_TAR_ENTRIES …
	MaxNameLength int        `json:"max_name_length"` // … R8IM_MAX_NAME_LENGTH …
	MaxBytes      int64      `json:"max_bytes"`       // … and R8IM_MAX_WEIGHTS_SIZE set them
	Want          string     `json:"want"`
}

func (c tarCase) build(t *testing.T) []byte {
	t.Helper()
	var data []byte
	switch {
	case c.Raw != nil:
		data = []byte(*c.Raw)
	case c.RawHex != "":
		var err error
		if data, err = hex.DecodeString(c.RawHex); err != nil {
			t.Fatal(err)
		}
	default:
		var entries []testenv.Entry
		for _, e := range c.Entries {
			entries = append(entries, tarEntries(t, e)...)
		}
		data = testenv.Tar(t, entries...)
	}
	data = append(data, make([]byte, c.Pad)...)
	if c.AppendCopy {
		data = append(data, data...)
	}
	for _, alg := range []string{c.Compress, c.CompressAgain} {
		data = compress(t, alg, data)
	}
	if c.CorruptAt > 0 {
		data[c.CorruptAt] ^= 0xff
	}
	if c.Truncate > 0 {
		if c.Truncate >= len(data) {
			t.Fatalf("truncate %d: the input has only %d bytes", c.Truncate, len(data))
		}
		data = data[:c.Truncate]
	}
	return data
}

// tarEntries are the testenv entries of one case entry (MANY:n is n).
func tarEntries(t *testing.T, e tarEntry) []testenv.Entry {
	t.Helper()
	for _, many := range []string{"MANY:", "MANY-ABS:"} {
		if n, ok := strings.CutPrefix(e.Name, many); ok {
			count, _ := strconv.Atoi(n)
			var out []testenv.Entry
			for i := range count {
				f := e
				f.Name = fmt.Sprintf("f%d.bin", i)
				if many == "MANY-ABS:" {
					f.Name = fmt.Sprintf("/etc/cron.d/f%d", i)
				}
				out = append(out, tarEntries(t, f)...)
			}
			return out
		}
	}
	te := testenv.Entry{Name: expand(e.Name), Linkname: expand(e.Link), Mode: 0o644}
	body := []byte(e.Body)
	if e.Size > 0 { // incompressible, like weights
		body = make([]byte, e.Size)
		rng := rand.New(rand.NewPCG(uint64(e.Size), 7))
		for i := range body {
			if !e.Zeros {
				body[i] = byte(rng.Uint32())
			}
		}
	}
	switch e.Type {
	case "", "file":
		te.Type, te.Body = tar.TypeReg, string(body)
	case "dir":
		te.Type, te.Mode = tar.TypeDir, 0o755
	case "symlink":
		te.Type = tar.TypeSymlink
	case "hardlink":
		te.Type = tar.TypeLink
	case "char":
		te.Type, te.Devmajor, te.Devminor, te.Format = tar.TypeChar, 1, 3, tar.FormatGNU
	case "block":
		te.Type, te.Devmajor, te.Devminor, te.Format = tar.TypeBlock, 8, 0, tar.FormatGNU
	case "fifo":
		te.Type = tar.TypeFifo
	case "sparse":
		te = testenv.PAXSparse(te.Name)
	default:
		t.Fatalf("unknown entry type %q", e.Type)
	}
	return []testenv.Entry{te}
}

func compress(t *testing.T, alg string, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w io.WriteCloser
	switch alg {
	case "":
		return data
	case "gzip":
		w = gzip.NewWriter(&buf)
	case "zstd":
		zw, err := zstd.NewWriter(&buf)
		if err != nil {
			t.Fatal(err)
		}
		w = zw
	default:
		t.Fatalf("unknown compression %q", alg)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestHostileTarballs affixes each hostile tarball onto a real base in a
// real registry with imageops.Affix (what the worker runs), or runs it
// through imageops.RewriteTar with the limits a case sets (Affix does not
// take limits). Each must fail with its error, permanently, and push
// nothing.
func TestHostileTarballs(t *testing.T) {
	t.Parallel()
	cases := loadCases[tarCase](t, "tars.json")
	// One registry (distribution 2.8, open): the tarball is refused before
	// anything is pushed; the registry only holds the base, and the
	// checks under test never reach it.
	reg := testenv.Registry(t)
	base := testenv.PushBase(t, reg.Host, "base/hostile", testenv.OCI).String()
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			data := c.build(t)
			limits := imageops.TarLimits{MaxEntries: c.MaxEntries, MaxNameLength: c.MaxNameLength, MaxBytes: c.MaxBytes}
			var err error
			if c.Via == "RewriteTar" {
				var tr io.ReadCloser
				if tr, _, err = imageops.OpenTarStream(bytes.NewReader(data)); err == nil {
					_, err = imageops.RewriteTar(io.Discard, tr, imageops.TarPolicy{MaxEntries: c.MaxEntries, MaxNameLength: c.MaxNameLength, MaxBytes: c.MaxBytes})
					tr.Close()
				}
			} else {
				b := base
				if c.Base != "" {
					b = c.Base
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				_, err = imageops.Affix(ctx, imageops.AffixRequest{
					Base: b, Dest: reg.Host + "/hostile/" + c.Name + ":v1", Created: created,
					Weights: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil },
				}, imageops.WithTarLimits(limits))
				if hasManifest(t, reg.Host+"/hostile/"+c.Name+":v1") {
					t.Errorf("an image was pushed")
				}
			}
			if err == nil {
				t.Fatalf("accepted; want an error holding %q", c.Want)
			}
			if !strings.Contains(err.Error(), c.Want) {
				t.Fatalf("error:\n%v\nwant it to hold %q", err, c.Want)
			}
			if c.Via == "" && !c.Transient && !imageops.IsPermanent(err) {
				t.Errorf("error %v is not permanent: the worker would retry a tarball that can never pass", err)
			}
		})
	}
}

type payloadCase struct {
	Name    string          `json:"name"`
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload"`
	Raw     *string         `json:"raw"`
	Want    string          `json:"want"`
}

// TestHostilePayloads enqueues each bad payload as a raw asynq task (as a
// producer other than jobs.Enqueuer could) and lets a real worker handler
// take it: each must fail at its first attempt, permanently, with a record
// whose error names the problem.
func TestHostilePayloads(t *testing.T) {
	t.Parallel()
	cases := loadCases[payloadCase](t, "payloads.json")
	rds := testenv.Redis(t)
	rdb := rds.Client(t)
	records := storage.NewRecords(rdb, time.Hour)
	var s3cfg config.S3
	s3cfg.Endpoint, s3cfg.Region, s3cfg.PathStyle = "http://127.0.0.1:1", "us-east-1", true // nothing listens: no payload may get this far
	s3cfg.AccessKeyID, s3cfg.SecretAccessKey = "unused", "unused"
	s3cfg.ChunkSize, s3cfg.Concurrency = 4<<20, 1
	sources, err := storage.NewSources(context.Background(), s3cfg)
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.DiscardHandler) // the records carry the errors checked
	srv := jobs.NewServer(rdb, jobs.ServerConfig{Concurrency: 4, Queues: config.DefaultQueues, ShutdownTimeout: time.Second, Log: quiet},
		&jobs.Handler{Records: records, Sources: sources, Log: quiet})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	client := asynq.NewClientFromRedisClient(rdb)
	t.Cleanup(func() { _ = client.Close() })
	for _, c := range cases {
		body := []byte(expand(string(c.Payload)))
		if c.Raw != nil {
			body = []byte(*c.Raw)
		}
		body = bytes.ReplaceAll(body, []byte(`"BASE"`), []byte(`"r8.im/acme/base:v1"`))
		body = bytes.ReplaceAll(body, []byte(`"DEST"`), []byte(`"r8.im/acme/model:v1"`))
		if _, err := client.Enqueue(asynq.NewTask(c.Type, body), asynq.TaskID("hostile:"+c.Name), asynq.Queue(task.QueuePublish), asynq.MaxRetry(0)); err != nil {
			t.Fatalf("%s: enqueueing: %v", c.Name, err)
		}
	}
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			var rec *storage.Record
			poll(t, time.Minute, func() bool {
				rec, err = records.Get(context.Background(), "hostile:"+c.Name)
				return err == nil && (rec.State == storage.StateFailed || rec.State == storage.StateSucceeded)
			}, func() string { return fmt.Sprintf("record %+v, %v", rec, err) })
			if rec.State != storage.StateFailed || rec.Attempts != 1 {
				t.Fatalf("record %+v; want failed at its first attempt", rec)
			}
			if !strings.Contains(rec.LastError, c.Want) {
				t.Fatalf("error:\n%s\nwant it to hold %q", rec.LastError, c.Want)
			}
			if !strings.Contains(rec.LastError, "invalid task payload") {
				t.Errorf("error %q does not say the payload is invalid (so it is not marked permanent)", rec.LastError)
			}
		})
	}
}

type eventCase struct {
	Name        string         `json:"name"`
	Sign        string         `json:"sign"` // valid, none, wrong-secret, tampered, replayed, future, header:<value>
	Set         map[string]any `json:"set"`  // fields replacing the valid event's
	Raw         *string        `json:"raw"`
	RawHex      string         `json:"raw_hex"`
	PadBody     int            `json:"pad_body"`
	PadMetadata int            `json:"pad_metadata"`
	Status      int            `json:"status"`
	Want        string         `json:"want"`
}

// TestHostileEvents posts each case to the HTTP event receiver (real Redis
// behind it) and checks the status and that the answer names the problem.
func TestHostileEvents(t *testing.T) {
	t.Parallel()
	cases := loadCases[eventCase](t, "events.json")
	rds := testenv.Redis(t)
	rdb := rds.Client(t)
	records := storage.NewRecords(rdb, time.Hour)
	enq := jobs.NewEnqueuer(rdb, records, config.NewEnqueue().Tasks)
	t.Cleanup(func() { _ = enq.Close() })
	secret := []byte("event-secret-0123456789abcdef")
	allow, err := events.NewAllowlists(events.AllowlistSettings{Sources: "s3://weights/*", Destinations: "r8.im/acme/*", CallbackHosts: "hooks.example.com", Bases: "r8.im/acme/*"})
	if err != nil {
		t.Fatal(err)
	}
	rc := &events.Receiver{Verifier: events.Verifier{Secrets: [][]byte{secret}}, Allow: allow, Enqueuer: enq, Records: records, Log: slog.New(slog.DiscardHandler)}
	srv := httptest.NewServer(rc.Handler())
	t.Cleanup(srv.Close)

	for i, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			ev := map[string]any{
				"id": fmt.Sprintf("run-hostile-%d", i), "base": "r8.im/acme/base:v1", "weights": "s3://weights/run/w.tar",
				"destination":  map[string]any{"repo": "r8.im/acme/model", "tag": "v1"},
				"completed_at": "2026-11-20T08:00:00Z", "callback_url": "https://hooks.example.com/r8im",
			}
			for k, v := range c.Set {
				ev[k] = v
			}
			if c.PadMetadata > 0 {
				ev["metadata"] = map[string]string{"pad": strings.Repeat("m", c.PadMetadata)}
			}
			if c.PadBody > 0 {
				ev["metadata"] = map[string]string{"pad": strings.Repeat("b", c.PadBody)}
			}
			body, _ := json.Marshal(ev)
			switch {
			case c.Raw != nil:
				body = []byte(*c.Raw)
			case c.RawHex != "":
				body, _ = hex.DecodeString(c.RawHex)
			}
			now := time.Now()
			sig := ""
			switch c.Sign {
			case "valid":
				sig = events.Sign(secret, now, body)
			case "none":
			case "wrong-secret":
				sig = events.Sign([]byte("another-secret-0123456789"), now, body)
			case "tampered":
				sig = events.Sign(secret, now, body)
				body = bytes.Replace(body, []byte("r8.im/acme/model"), []byte("r8.im/acme/modex"), 1)
			case "replayed":
				sig = events.Sign(secret, now.Add(-time.Hour), body)
			case "future":
				sig = events.Sign(secret, now.Add(time.Hour), body)
			default:
				h, ok := strings.CutPrefix(c.Sign, "header:")
				if !ok {
					t.Fatalf("unknown sign mode %q", c.Sign)
				}
				sig = expand(h)
			}
			req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/events/training-completed", bytes.NewReader(body))
			if sig != "" {
				req.Header.Set(events.SignatureHeader, sig)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			answer, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != c.Status || !bytes.Contains(answer, []byte(c.Want)) {
				t.Fatalf("answer %d %s\nwant %d holding %q", resp.StatusCode, answer, c.Status, c.Want)
			}
			if c.Status != http.StatusAccepted {
				if _, err := records.Get(context.Background(), fmt.Sprintf("affix:run-hostile-%d", i)); !errors.Is(err, storage.ErrNoRecord) {
					t.Fatalf("a refused event left a record (%v)", err)
				}
			}
		})
	}
}
