package bench

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/r8im/r8im/internal/testenv"
)

// TestBenchSmoke runs the whole harness in a tiny configuration so that a
// broken harness shows up in make test. It checks that every case produced
// its row, never how fast anything was. crane and regctl come from make
// bench-tools, which make test runs.
func TestBenchSmoke(t *testing.T) {
	cases := AllCases
	for _, tool := range []string{CaseCrane, CaseRegctl} {
		if _, err := testenv.FindBinary(tool); err != nil {
			t.Fatalf("%s is not installed: run make bench-tools (make test does)", tool)
		}
	}
	var log bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	work := t.TempDir()
	rep, err := Run(ctx, Config{
		Sizes: []int64{4 << 20, 8 << 20}, Runs: 1, Shards: 2, ZstdSize: 6 << 20, QueueTasks: 50,
		Cases: cases, WorkDir: filepath.Join(work, "bench"), Log: &log,
	})
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, log.String())
	}
	want := []string{"raw-4MiB", "raw-8MiB", "affix-gzip-8MiB", "affix-zstd-8MiB", "affix-none-8MiB", "s3-worker-8MiB",
		"memory-r8im-8MiB", "memory-growth-r8im", "memory-worker-8MiB", "remix-4MiB", "zstd-ours-6MiB",
		"zstd-cache-second-6MiB", "queue-enqueue-1", "queue-enqueue-8", "queue-noop-worker"}
	want = append(want, "crane-8MiB", "zstd-regctl-6MiB")
	for _, id := range []string{"raw", "tar", "dir", "worker", "crane", "loop-raw", "loop-tar", "loop-worker", "memory-r8im", "memory-worker"} {
		want = append(want, "far-"+id+"-8MiB")
	}
	want = append(want, "far-raw-4MiB", "far-tar-4MiB", "far-republish-8MiB", "far-memory-growth-r8im", "far-memory-growth-worker")
	for _, id := range want {
		r := rep.Find(id)
		if r == nil {
			t.Errorf("no %s row", id)
			continue
		}
		if r.Median <= 0 && r.Unit != "bytes" {
			t.Errorf("%s: median %v", id, r.Median)
		}
	}
	if r := rep.Find("remix-4MiB"); r != nil && r.Bytes != 0 {
		t.Errorf("remix moved %d layer bytes through the proxy; want 0", r.Bytes)
	}

	out := filepath.Join(work, "out", "results.json")
	if err := rep.WriteJSON(out); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(out); err != nil || !bytes.Contains(b, []byte(`"case": "affix-gzip-8MiB"`)) {
		t.Fatalf("JSON report: %v\n%s", err, b)
	}
	var table strings.Builder
	if err := rep.PrintTable(&table); err != nil || !strings.Contains(table.String(), "r8im affix --compression zstd, 8MiB") {
		t.Fatalf("table: %v\n%s", err, table.String())
	}
	if _, err := os.Stat(filepath.Join(work, "bench")); !os.IsNotExist(err) {
		t.Errorf("the work directory was left behind: %v", err)
	}
}

// TestConfigDefaults checks what Run is given before anything starts: the
// defaults filled in, and settings that cannot work refused with a message
// naming them.
func TestConfigDefaults(t *testing.T) {
	t.Run("defaults", func(t *testing.T) {
		var c Config
		if err := c.defaults(); err != nil {
			t.Fatal(err)
		}
		if c.FarBandwidth != 50_000_000 || !slices.Equal(c.Sizes, []int64{1 << 30, 4 << 30}) || !slices.Equal(c.Cases, AllCases) || !slices.Contains(c.Cases, CaseFar) {
			t.Errorf("defaults: bandwidth %d, sizes %v, cases %v", c.FarBandwidth, c.Sizes, c.Cases)
		}
	})
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"unknown case", Config{Cases: []string{"fra"}}, `unknown case "fra"`},
		{"negative bandwidth", Config{FarBandwidth: -1}, "far bandwidth -1"},
		{"tiny bandwidth", Config{FarBandwidth: 999}, "far bandwidth 999"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.defaults()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v; want one containing %q", err, tc.want)
			}
		})
	}
}

// TestCranePinnedToGoMod keeps make bench's crane at the go-containerregistry
// version r8im itself uses, so the comparison is library against library.
func TestCranePinnedToGoMod(t *testing.T) {
	mk, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	mod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	var crane, ggcr string
	for _, line := range strings.Split(string(mk), "\n") {
		if k, v, ok := strings.Cut(line, ":="); ok && strings.TrimSpace(k) == "CRANE_VERSION" {
			crane = strings.TrimSpace(v)
		}
	}
	for _, line := range strings.Split(string(mod), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "github.com/google/go-containerregistry" {
			ggcr = f[1]
		}
	}
	if crane == "" || crane != ggcr {
		t.Fatalf("Makefile CRANE_VERSION %q, go.mod go-containerregistry %q: keep them equal", crane, ggcr)
	}
}
