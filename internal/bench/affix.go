package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/redis/go-redis/v9"

	"github.com/r8im/r8im/internal/testenv"
	"github.com/r8im/r8im/storage"
)

var compressions = []string{"gzip", "zstd", "none"}

// affixOut is the part of `r8im affix --json` the benchmark reads.
type affixOut struct {
	Ref   string `json:"ref"`
	Layer struct {
		Size int64 `json:"size"`
	} `json:"layer"`
}

// peak RSS medians per process kind ("r8im", "worker") and input size: the
// largest over compressions.
type rssTable map[string]map[int64]int64

func (t rssTable) put(kind string, size, rss int64) {
	if t[kind] == nil {
		t[kind] = map[int64]int64{}
	}
	t[kind][size] = max(t[kind][size], rss)
}

// affixSize measures, for one input size and interleaved run by run: the
// raw floor, r8im affix with each compression, crane append, and (in a
// second loop, since it needs the tarball in MinIO) affix from S3 through a
// worker process.
func (b *bench) affixSize(ctx context.Context, size int64) error {
	sn := sizeName(size)
	tarPath := filepath.Join(b.dir, "weights-"+sn+".tar")
	b.logf("writing the %s weights tarball (%d shards)", sn, b.cfg.Shards)
	sum, err := writeWeights(tarPath, size, b.cfg.Shards, 7)
	defer os.Remove(tarPath)
	if err != nil {
		return err
	}
	st, err := os.Stat(tarPath)
	if err != nil {
		return err
	}
	host := b.svc.regHost

	var raw, crane []float64
	var chunk *chunkRuns
	if b.cfg.has(CaseChunk) {
		if chunk, err = b.startChunk(); err != nil {
			return err
		}
		defer chunk.close()
	}
	secs := map[string][]float64{}
	rss := map[string][]int64{}
	layer := map[string]int64{}
	for i := 1; i <= b.cfg.Runs; i++ {
		b.logf("%s run %d/%d: raw floor", sn, i, b.cfg.Runs)
		s, err := rawUpload(ctx, host, fmt.Sprintf("raw/%s-%d", strings.ToLower(sn), i), tarPath, sum, st.Size())
		if err != nil {
			return fmt.Errorf("raw upload: %w", err)
		}
		raw = append(raw, s)
		if b.cfg.has(CaseAffix) || b.cfg.has(CaseRemix) || b.cfg.has(CaseChunk) {
			for _, c := range compressions {
				b.logf("%s run %d/%d: r8im affix --compression %s", sn, i, b.cfg.Runs, c)
				r, err := b.exec(ctx, nil, nil, b.bins.r8im, "affix", "-q", "--json", "--base", b.base,
					"--dest", fmt.Sprintf("%s/models/%s-%s-%d", host, c, strings.ToLower(sn), i), "--tar", tarPath, "--compression", c, "--created", created)
				if err != nil {
					return err
				}
				var out affixOut
				if err := json.Unmarshal(r.stdout, &out); err != nil {
					return fmt.Errorf("reading r8im affix --json: %w", err)
				}
				secs[c] = append(secs[c], r.seconds)
				rss[c] = append(rss[c], r.rss)
				layer[c] = out.Layer.Size
				if i == 1 {
					if b.affixed[size] == nil {
						b.affixed[size] = map[string]string{}
					}
					b.affixed[size][c] = out.Ref
				}
			}
		}
		if chunk != nil {
			if err := b.chunkRun(ctx, chunk, sn, tarPath, i); err != nil {
				return err
			}
		}
		if b.cfg.has(CaseCrane) {
			b.logf("%s run %d/%d: crane append", sn, i, b.cfg.Runs)
			r, err := b.exec(ctx, nil, nil, b.bins.crane, "append", "-b", b.base, "-f", tarPath, "-t", fmt.Sprintf("%s/crane/%s-%d:v1", host, strings.ToLower(sn), i))
			if err != nil {
				return err
			}
			crane = append(crane, r.seconds)
		}
	}

	rawMed := median(raw)
	b.add(Result{Case: "raw-" + sn, Title: "raw floor: one monolithic blob PUT, " + sn, Size: st.Size(), Unit: "s", Runs: raw,
		Ratio: 1, RatioOf: "÷ raw", Bytes: st.Size(), Note: "digest precomputed; the registry's own limit"})
	if b.cfg.has(CaseAffix) {
		for _, c := range compressions {
			m := median(secs[c])
			b.add(Result{Case: "affix-" + c + "-" + sn, Title: "r8im affix --compression " + c + ", " + sn, Size: st.Size(), Unit: "s", Runs: secs[c],
				Ratio: m / rawMed, RatioOf: "÷ raw", Target: "≤ 1.20", Holds: holds(m/rawMed <= 1.2), PeakRSS: medianInt(rss[c]), Bytes: layer[c]})
			b.rss.put("r8im", size, medianInt(rss[c]))
		}
	}
	if chunk != nil {
		b.chunkResults(chunk, sn, st.Size(), secs["none"], rawMed)
	}
	if b.cfg.has(CaseCrane) {
		m := median(crane)
		res := Result{Case: "crane-" + sn, Title: "crane append (same tarball, same base), " + sn, Size: st.Size(), Unit: "s", Runs: crane,
			Note: fmt.Sprintf("%.2f× raw", m/rawMed)}
		if g := median(secs["gzip"]); g > 0 {
			res.Ratio, res.RatioOf, res.Target, res.Holds = m/g, "÷ r8im gzip", "≥ 2.0", holds(m/g >= 2)
		}
		b.add(res)
	}
	if b.cfg.has(CaseS3) {
		return b.s3Affix(ctx, size, tarPath, rawMed)
	}
	return nil
}

// rawUpload is the physical floor: the tarball's bytes as one monolithic
// blob upload (POST, then one PUT with the precomputed digest).
func rawUpload(ctx context.Context, host, repo, path, sum string, size int64) (float64, error) {
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+host+"/v2/"+repo+"/blobs/uploads/", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return 0, fmt.Errorf("starting an upload: %s", resp.Status)
	}
	loc, err := resp.Location()
	if err != nil {
		return 0, fmt.Errorf("upload location: %w", err)
	}
	q := loc.Query()
	q.Set("digest", "sha256:"+sum)
	loc.RawQuery = q.Encode()
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	put, err := http.NewRequestWithContext(ctx, http.MethodPut, loc.String(), f)
	if err != nil {
		return 0, err
	}
	put.ContentLength = size
	put.Header.Set("Content-Type", "application/octet-stream")
	resp, err = http.DefaultClient.Do(put)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return 0, fmt.Errorf("monolithic PUT: %s", resp.Status)
	}
	return time.Since(start).Seconds(), nil
}

// s3Affix runs a real worker process per run and `enqueue affix --wait`
// for the tarball in MinIO. The figure compared with the raw floor is the
// task's own duration from its record (started → finished); the
// enqueue-to-result wall time, which adds asynq's polling (up to 1s) and
// --wait's (500ms), is in the note.
func (b *bench) s3Affix(ctx context.Context, size int64, tarPath string, rawMed float64) error {
	sn := sizeName(size)
	key := "runs/" + sn + "/weights.tar"
	b.logf("%s: putting the tarball into MinIO", sn)
	u, err := b.svc.putObject(ctx, key, tarPath)
	if err != nil {
		return err
	}
	defer func() {
		_, _ = b.svc.s3.client().DeleteObject(context.WithoutCancel(ctx), &s3.DeleteObjectInput{Bucket: aws.String(b.svc.s3.bucket), Key: aws.String(key)})
	}()
	rdb := redis.NewClient(&redis.Options{Addr: b.svc.redisAddr})
	defer rdb.Close()
	records := storage.NewRecords(rdb, 24*time.Hour)
	redisURL := "REDIS_URL=redis://" + b.svc.redisAddr + "/0"

	var task, wall []float64
	var rss []int64
	for i := 1; i <= b.cfg.Runs; i++ {
		b.logf("%s run %d/%d: worker affix from S3", sn, i, b.cfg.Runs)
		ev := fmt.Sprintf("bench-s3-%s-%d", strings.ToLower(sn), i)
		w, err := b.workerAffix(ctx, records, fmt.Sprintf("worker-%s-%d", sn, i), ev, []string{redisURL},
			"--base", b.base, "--weights", u, "--dest", fmt.Sprintf("%s/models/s3-%s-%d", b.svc.regHost, strings.ToLower(sn), i))
		if err != nil {
			return err
		}
		task, wall, rss = append(task, w.task), append(wall, w.wall), append(rss, w.rss)
	}
	m := median(task)
	b.add(Result{Case: "s3-worker-" + sn, Title: "worker affix from S3 (MinIO), gzip, " + sn, Size: size, Unit: "s", Runs: task,
		Ratio: m / rawMed, RatioOf: "÷ raw", Target: "≤ 1.30", Holds: holds(m/rawMed <= 1.3), PeakRSS: medianInt(rss),
		Note: fmt.Sprintf("task time from its record; enqueue→result wall %.2fs", median(wall))})
	b.rss.put("worker", size, medianInt(rss))
	return nil
}

// workerRun is one affix task through a worker process.
type workerRun struct {
	task, wall float64 // the task's own duration from its record; enqueue → result
	rss        int64   // the worker's peak RSS
}

// workerAffix starts a worker (concurrency 1, S3 settings, env, which must
// hold REDIS_URL for rdb's database), enqueues one affix task with event id
// ev and args (base, weights, dest…) with `enqueue affix --wait`, stops the
// worker and reads the task's record.
func (b *bench) workerAffix(ctx context.Context, records *storage.Records, logName, ev string, env []string, args ...string) (workerRun, error) {
	httpAddr, err := freeAddr()
	if err != nil {
		return workerRun{}, err
	}
	wenv := append(b.svc.s3.env(), "R8IM_HTTP_ADDR="+httpAddr, "R8IM_LOG_FORMAT=json", "R8IM_CONCURRENCY=1")
	w, err := spawn(b.dir, logName, b.bins.worker, append(wenv, env...))
	if err != nil {
		return workerRun{}, err
	}
	if err := w.waitReady(ctx, func(ctx context.Context) error { return testenv.HTTPOK(ctx, "http://"+httpAddr+"/healthz") }); err != nil {
		w.stop()
		return workerRun{}, err
	}
	args = append(append([]string{"affix"}, args...), "--event-id", ev, "--created", created, "--queue", "publish", "--wait")
	r, err := b.exec(ctx, env, nil, b.bins.enqueue, args...)
	peak := w.stop()
	if err != nil {
		return workerRun{}, fmt.Errorf("%w\nworker log:\n%s", err, w.tail())
	}
	rec, err := records.Get(ctx, "affix:"+ev)
	if err != nil {
		return workerRun{}, fmt.Errorf("reading the record of %s: %w", ev, err)
	}
	if rec.StartedAt == nil || rec.FinishedAt == nil {
		return workerRun{}, fmt.Errorf("record of %s has no start or finish time", ev)
	}
	return workerRun{task: rec.FinishedAt.Sub(*rec.StartedAt).Seconds(), wall: r.seconds, rss: peak}, nil
}

// memoryRows reports peak RSS at the largest size and its growth from the
// smallest.
func (b *bench) memoryRows() {
	sizes := slices.Clone(b.cfg.Sizes)
	slices.Sort(sizes)
	small, large := sizes[0], sizes[len(sizes)-1]
	for _, kind := range []string{"r8im", "worker"} {
		t := b.rss[kind]
		if t == nil {
			continue
		}
		title := map[string]string{"r8im": "r8im affix (largest of gzip/zstd/none)", "worker": "worker affixing from S3"}[kind]
		peak := float64(t[large]) / (1 << 20)
		b.add(Result{Case: "memory-" + kind + "-" + sizeName(large), Title: "memory: peak RSS of " + title + ", " + sizeName(large), Size: large, Unit: "MiB",
			Median: peak, Target: "≤ 200 MiB", Holds: holds(peak <= 200), PeakRSS: t[large]})
		if small != large && t[small] > 0 {
			g := float64(t[large]) / float64(t[small])
			b.add(Result{Case: "memory-growth-" + kind, Title: fmt.Sprintf("memory growth of %s, %s → %s", title, sizeName(small), sizeName(large)), Unit: "MiB",
				Median: peak, Ratio: g, RatioOf: "× " + sizeName(small), Target: "≤ 1.20", Holds: holds(g <= 1.2),
				Note: fmt.Sprintf("%.0f MiB at %s", float64(t[small])/(1<<20), sizeName(small))})
		}
	}
}

// withHost replaces the registry host of ref.
func withHost(ref, host string) string {
	_, rest, _ := strings.Cut(ref, "/")
	return host + "/" + rest
}
