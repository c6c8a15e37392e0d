package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/r8im/r8im/internal/devstack"
	"github.com/r8im/r8im/internal/testenv"
	"github.com/r8im/r8im/storage"
)

// TestDevDemoPublishesEndToEnd runs `worker --dev --demo` and reads the
// published image back from the embedded registry while the stack still
// runs: the weights layer holds the demo's files under /src/weights and its
// blob has the recorded digest, also on disk under --data-dir.
func TestDevDemoPublishesEndToEnd(t *testing.T) {
	dataDir := t.TempDir()
	var rec *storage.Record
	var checked bool
	hooks := devHooks{published: func(ctx context.Context, st *devstack.Stack, r *storage.Record) error {
		rec = r
		checked = true
		return checkPublished(ctx, st, r)
	}}
	root := newRootWith(env(nil), hooks)
	var stdout, stderr bytes.Buffer
	root.SetOut(&stdout)
	root.SetErr(&stderr)
	root.SetArgs([]string{"--dev", "--demo", "--data-dir", dataDir})
	if err := root.ExecuteContext(context.Background()); err != nil {
		t.Fatalf("worker --dev --demo: %v\nstderr:\n%s", err, stderr.String())
	}
	if !checked || rec == nil {
		t.Fatalf("the demo returned without publishing\nstderr:\n%s", stderr.String())
	}
	if rec.State != storage.StateSucceeded || rec.EventID != demoEventID || rec.Attempts != 1 {
		t.Errorf("record %+v; want event %s succeeded at the first attempt", rec, demoEventID)
	}

	// stdout: the reference, then the `r8im layers` table of it.
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if len(lines) < 5 || lines[0] != rec.Result || !strings.Contains(lines[0], "/demo/model@sha256:") {
		t.Fatalf("stdout does not start with the published reference %q:\n%s", rec.Result, stdout.String())
	}
	for _, want := range []string{"#  DIGEST", "ADD rootfs.tar /", "COPY . /src", "COPY weights /src/weights # weights", "3 layers", rec.LayerDigest[:19]} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("the layers table lacks %q:\n%s", want, stdout.String())
		}
	}
	for _, want := range []string{"dev: Redis", "dev: registry", "dev: S3", "dev: events", "demo: signed event demo-1 accepted", "demo: succeeded"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
		}
	}
	if strings.Contains(stdout.String()+stderr.String(), "R8IM_EVENT_SECRETS") {
		t.Error("the demo prints the event secret; only --dev without --demo hands it out")
	}

	// The weights blob stays on disk, under its digest.
	hexDigest := strings.TrimPrefix(rec.LayerDigest, "sha256:")
	blob, err := os.ReadFile(filepath.Join(dataDir, "registry", "sha256", hexDigest))
	if err != nil {
		t.Fatalf("the weights layer is not under --data-dir: %v", err)
	}
	if sum := sha256.Sum256(blob); hex.EncodeToString(sum[:]) != hexDigest {
		t.Errorf("the blob on disk hashes to %x, want %s", sum, hexDigest)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "s3", "buckets", devstack.Bucket, "demo", "weights.tar")); err != nil {
		t.Errorf("the weights tarball is not in the S3 directory: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, envFileName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the env file outlives the stack: %v", err)
	}
}

// checkPublished reads the image back with go-containerregistry: its last
// layer is the recorded weights layer and holds exactly the demo's files.
func checkPublished(ctx context.Context, st *devstack.Stack, rec *storage.Record) error {
	ref, err := name.NewDigest(rec.Result)
	if err != nil {
		return err
	}
	if ref.Context().RegistryStr() != st.Registry {
		return fmt.Errorf("published to %s, not the embedded registry %s", ref.Context().RegistryStr(), st.Registry)
	}
	img, err := remote.Image(ref, remote.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("reading %s back: %w", ref, err)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 3 {
		return fmt.Errorf("layers of %s: %d, %v; want the base's 2 and the weights", ref, len(layers), err)
	}
	weights := layers[2]
	d, err := weights.Digest()
	if err != nil || d.String() != rec.LayerDigest {
		return fmt.Errorf("the last layer is %s (%v); the record says %s", d, err, rec.LayerDigest)
	}
	rc, err := weights.Compressed()
	if err != nil {
		return err
	}
	h := sha256.New()
	n, err := io.Copy(h, rc)
	rc.Close()
	if err != nil || "sha256:"+hex.EncodeToString(h.Sum(nil)) != rec.LayerDigest || n != rec.LayerSize {
		return fmt.Errorf("the layer blob (%d bytes, %v) does not hash to the recorded %s (%d bytes)", n, err, rec.LayerDigest, rec.LayerSize)
	}
	urc, err := weights.Uncompressed()
	if err != nil {
		return err
	}
	defer urc.Close()
	members, err := testenv.ReadTar(urc)
	if err != nil {
		return fmt.Errorf("reading the weights layer: %w", err)
	}
	got := map[string][]byte{}
	for _, m := range members {
		if m.Typeflag == tar.TypeReg {
			got[m.Name] = []byte(m.Body)
		}
	}
	want := devstack.DemoWeights()
	if len(got) != len(want) {
		return fmt.Errorf("the weights layer holds %d files, want %d", len(got), len(want))
	}
	for _, f := range want {
		if b, ok := got["src/weights/"+f.Name]; !ok || !bytes.Equal(b, f.Data) {
			return fmt.Errorf("src/weights/%s is missing or differs (have %v)", f.Name, keys(got))
		}
	}
	return nil
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestDevServesEnqueue runs `worker --dev` (no demo) and uses it as a user
// would: source the env file it writes, `enqueue affix --wait` against it,
// then read the worker's /healthz, /readyz and /metrics.
func TestDevServesEnqueue(t *testing.T) {
	enqueueBin := buildEnqueue(t)
	dataDir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	root := newRoot(env(nil))
	stdout, stderr := &testenv.Buffer{}, &testenv.Buffer{}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetArgs([]string{"--dev", "--data-dir", dataDir})
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			return errors.New("worker --dev did not stop within 30s of its context ending")
		}
	}
	t.Cleanup(func() { _ = stop() })

	envFile := filepath.Join(dataDir, envFileName)
	vars := waitForEnv(t, envFile, done, stderr)
	for _, k := range []string{"REDIS_URL", "R8IM_REGISTRY", "AWS_ENDPOINT_URL_S3", "R8IM_EVENT_SECRETS", "R8IM_DEV_BASE", "R8IM_DEV_WEIGHTS", "R8IM_DEV_WORKER_HTTP"} {
		if vars[k] == "" {
			t.Fatalf("the env file lacks %s:\n%v", k, vars)
		}
		if !strings.Contains(stdout.String(), "export "+k+"=") {
			t.Errorf("stdout does not print %s", k)
		}
	}
	if fi, err := os.Stat(envFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("the env file holds the event secret; mode %v (%v), want 0600", fi.Mode().Perm(), err)
	}

	cmd := exec.Command(enqueueBin, "affix", "--base", vars["R8IM_DEV_BASE"], "--weights", vars["R8IM_DEV_WEIGHTS"],
		"--dest", vars["R8IM_REGISTRY"]+"/demo/more:v2", "--event-id", "more-1", "--wait")
	cmd.Env = os.Environ()
	for k, v := range vars {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("enqueue affix --wait against the dev stack: %v\n%s\nworker:\n%s", err, errOut.String(), stderr.String())
	}
	if !strings.HasPrefix(out.String(), vars["R8IM_REGISTRY"]+"/demo/more@sha256:") {
		t.Fatalf("enqueue printed %q; want the published reference", out.String())
	}

	base := vars["R8IM_DEV_WORKER_HTTP"]
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, body := get(t, base+p); code != http.StatusOK {
			t.Errorf("GET %s = %d %s; want 200", p, code, body)
		}
	}
	// The attempt is observed just after its record is written.
	wantSeries := []string{
		`r8im_task_duration_seconds_count{status="succeeded",type="image:affix"} 1`,
		`asynq_tasks_processed_total{queue="ops"} 1`,
		`asynq_tasks_enqueued_total{queue="ops",state="completed"} 1`,
		`r8im_stage_duration_seconds_count{stage="upload",type="image:affix"} 1`,
		`r8im_queue_metrics_up 1`,
	}
	var metrics string
	testenv.Eventually(t, 10*time.Second, "/metrics to show the task", func() (bool, string) {
		_, metrics = get(t, base+"/metrics")
		var lacks []string
		for _, s := range wantSeries {
			if !strings.Contains(metrics, s+"\n") {
				lacks = append(lacks, s)
			}
		}
		return len(lacks) == 0, "/metrics lacks " + strings.Join(lacks, ", ")
	})
	if up := seriesValue(metrics, `r8im_uploaded_bytes_total{type="image:affix"}`); up < 1<<20 {
		t.Errorf("r8im_uploaded_bytes_total = %v; want at least the 1 MiB demo layer", up)
	}

	if err := stop(); err != nil {
		t.Fatalf("worker --dev after Ctrl-C: %v", err)
	}
	if _, err := os.Stat(envFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the env file outlives the stack: %v", err)
	}
}

// buildEnqueue builds the enqueue command, as a user's `go run ./cmd/enqueue` would.
func buildEnqueue(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "enqueue")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/r8im/r8im/cmd/enqueue")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/enqueue: %v\n%s", err, out)
	}
	return bin
}

// waitForEnv waits for worker --dev to write its env file and parses it.
func waitForEnv(t *testing.T, path string, done <-chan error, stderr *testenv.Buffer) map[string]string {
	t.Helper()
	testenv.Eventually(t, time.Minute, "worker --dev to write "+path, func() (bool, string) {
		select {
		case err := <-done:
			t.Fatalf("worker --dev ended early: %v\n%s", err, stderr.String())
		default:
		}
		_, err := os.Stat(path)
		return err == nil, fmt.Sprintf("%v; stderr:\n%s", err, stderr.String())
	})
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	vars := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "export ")
		if !ok {
			continue
		}
		k, v, _ := strings.Cut(line, "=")
		vars[k] = strings.Trim(v, "'")
	}
	return vars
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// seriesValue returns the value of one series in a text exposition, or -1.
func seriesValue(exposition, series string) float64 {
	for _, line := range strings.Split(exposition, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}
