package bench

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/redis/go-redis/v9"

	"github.com/r8im/r8im/internal/dirtar"
	"github.com/r8im/r8im/internal/testenv"
	"github.com/r8im/r8im/storage"
)

// DefaultFarBandwidth is the far registry's upload cap per connection:
// 50 MB/s, what one TCP stream gets to a registry across a continent.
const DefaultFarBandwidth = 50_000_000

// farJobs is the parallelism the far case asks of r8im and the worker.
const farJobs = "4"

// farAffixArgs are the options `r8im affix` gets in the far case: the
// layout and parallelism of issue 14 (compression is left at its default).
var farAffixArgs = []string{"--layers", "auto", "--jobs", farJobs}

// farWorkerEnv is the worker's equivalent of farAffixArgs.
var farWorkerEnv = []string{"R8IM_UPLOAD_JOBS=" + farJobs}

// farRedisDB is the Redis database of the far case's workers, flushed
// before each run so that no run finds the layer digests of another.
const farRedisDB = 1

// farInput is one far-registry input in every form the case publishes it
// from: a weights directory, the same directory as an uncompressed tar in
// path order, one tarball per file for crane, and the files as objects
// under an S3 prefix.
type farInput struct {
	size      int64  // bytes of the shards
	shards    int    // weight shards
	sn        string // sizeName(size)
	dir       string // the weights directory
	tar       string // the directory as a tar (dirtar's bytes, as r8im affix --dir reads it)
	tarSum    string // its sha256, hex
	tarSize   int64
	craneTars []string // one tarball per shard, then one with the small files
	prefix    string   // s3://bucket/far/<sn>/
	keys      []string // the prefix's object keys
}

// farShards is the number of shards of the i-th smallest far input: 4 for
// the smallest (1 GiB by default), 8 for the others (4 GiB).
func farShards(i int) int {
	if i == 0 {
		return 4
	}
	return 8
}

// far measures publishing to a far registry: the registry behind the test
// proxy with a per-connection upload cap (Config.FarBandwidth), for each of
// Config.Sizes (the smallest as 4 shards, the others as 8), interleaved run
// by run: the single-stream floor, r8im affix from a .tar and from --dir,
// a worker from an S3 prefix, crane append of one tarball per shard, and a
// re-publish of the largest input to another repository; then the same
// inputs on plain loopback for the raw floor, r8im affix and the worker's
// time and peak RSS.
func (b *bench) far(ctx context.Context) error {
	p, err := testenv.NewProxy(b.svc.regHost, testenv.ProxyConnBandwidth(b.cfg.FarBandwidth))
	if err != nil {
		return fmt.Errorf("starting the capped proxy: %w", err)
	}
	defer p.Close()
	rdb := redis.NewClient(&redis.Options{Addr: b.svc.redisAddr, DB: farRedisDB})
	defer rdb.Close()
	fr := &farRun{b: b, proxy: p, rdb: rdb, records: storage.NewRecords(rdb, 24*time.Hour), rss: rssTable{}}

	sizes := slices.Clone(b.cfg.Sizes)
	slices.Sort(sizes)
	sizes = slices.Compact(sizes)
	for i, size := range sizes {
		if err := fr.size(ctx, size, farShards(i), size == sizes[len(sizes)-1]); err != nil {
			return err
		}
	}
	fr.memoryRows(sizes[0], sizes[len(sizes)-1])
	return nil
}

// farRun is the far case's state across sizes.
type farRun struct {
	b       *bench
	proxy   *testenv.Proxy
	rdb     *redis.Client
	records *storage.Records
	rss     rssTable // loopback peak RSS per kind and size
}

// farTimes collects one size's figures, run by run.
type farTimes struct {
	secs   map[string][]float64
	rss    map[string][]int64
	layers int    // weights layers of the r8im image
	repub  int64  // most layer bytes through the proxy in a re-publish
	repubA int64  // most blob bytes (configs included)
	repubU int64  // most blob bytes uploaded
	others string // the blobs other than configs that crossed the proxy in a re-publish
	notes  map[string][]float64
}

func (t *farTimes) add(k string, s float64, rss int64) {
	t.secs[k] = append(t.secs[k], s)
	t.rss[k] = append(t.rss[k], rss)
}

func (fr *farRun) size(ctx context.Context, size int64, shards int, largest bool) error {
	b := fr.b
	in, err := fr.prepare(ctx, size, shards)
	defer in.remove(context.WithoutCancel(ctx), b)
	if err != nil {
		return err
	}
	far, loop := fr.proxy.Host, b.svc.regHost
	t := &farTimes{secs: map[string][]float64{}, rss: map[string][]int64{}, notes: map[string][]float64{}}
	lsn := strings.ToLower(in.sn)
	for i := 1; i <= b.cfg.Runs; i++ {
		step := func(what string) { b.logf("far %s run %d/%d: %s", in.sn, i, b.cfg.Runs, what) }

		step(fmt.Sprintf("raw floor through the proxy (%s/s per connection)", humanBW(b.cfg.FarBandwidth)))
		s, err := rawUpload(ctx, far, fmt.Sprintf("far-raw/%s-%d", lsn, i), in.tar, in.tarSum, in.tarSize)
		if err != nil {
			return fmt.Errorf("raw upload through the proxy: %w", err)
		}
		t.add("raw", s, 0)

		step("r8im affix --tar " + strings.Join(farAffixArgs, " "))
		r, ref, err := fr.affix(ctx, far, fmt.Sprintf("far/tar-%s-%d", lsn, i), fr.cacheDir(in, "tar", i), "--tar", in.tar)
		if err != nil {
			return err
		}
		t.add("tar", r.seconds, r.rss)
		if i == 1 {
			if t.layers, err = weightsLayers(ctx, withHost(ref, loop), withHost(b.base, loop)); err != nil {
				return err
			}
		}

		step("r8im affix --dir " + strings.Join(farAffixArgs, " "))
		dirCache := fr.cacheDir(in, "dir", i)
		r, _, err = fr.affix(ctx, far, fmt.Sprintf("far/dir-%s-%d", lsn, i), dirCache, "--dir", in.dir)
		if err != nil {
			return err
		}
		t.add("dir", r.seconds, r.rss)

		if largest {
			// The same directory, the same cache: every layer is known and
			// in the registry, in the repository the run above pushed to.
			step("re-publish of the --dir image to another repository")
			fr.proxy.Reset()
			r, ref, err = fr.affix(ctx, far, fmt.Sprintf("far/republish-%s-%d", lsn, i), dirCache, "--dir", in.dir)
			if err != nil {
				return err
			}
			t.add("republish", r.seconds, r.rss)
			layerBytes, all, others, err := proxyLayerBytes(ctx, fr.proxy, withHost(ref, loop), withHost(b.base, loop))
			if err != nil {
				return err
			}
			t.repub, t.repubA, t.repubU = max(t.repub, layerBytes), max(t.repubA, all), max(t.repubU, fr.proxy.Uploaded())
			if layerBytes > 0 {
				t.others = others
			}
		}

		step("worker affix from " + in.prefix + " with R8IM_UPLOAD_JOBS=" + farJobs)
		w, err := fr.worker(ctx, in, far, fmt.Sprintf("far-%s-%d", lsn, i))
		if err != nil {
			return err
		}
		t.add("worker", w.task, w.rss)
		t.notes["worker-wall"] = append(t.notes["worker-wall"], w.wall)

		step(fmt.Sprintf("crane append of %d tarballs", len(in.craneTars)))
		args := []string{"append", "-b", withHost(b.base, far), "-t", fmt.Sprintf("%s/far/crane-%s-%d:v1", far, lsn, i)}
		for _, f := range in.craneTars {
			args = append(args, "-f", f)
		}
		if r, err = b.exec(ctx, nil, nil, b.bins.crane, args...); err != nil {
			return err
		}
		t.add("crane", r.seconds, r.rss)

		step("raw floor on plain loopback")
		if s, err = rawUpload(ctx, loop, fmt.Sprintf("loop-raw/%s-%d", lsn, i), in.tar, in.tarSum, in.tarSize); err != nil {
			return fmt.Errorf("raw upload: %w", err)
		}
		t.add("loop-raw", s, 0)

		step("r8im affix --tar on plain loopback")
		if r, _, err = fr.affix(ctx, loop, fmt.Sprintf("loop/tar-%s-%d", lsn, i), fr.cacheDir(in, "loop-tar", i), "--tar", in.tar); err != nil {
			return err
		}
		t.add("loop-tar", r.seconds, r.rss)

		step("worker affix from S3 on plain loopback")
		if w, err = fr.worker(ctx, in, loop, fmt.Sprintf("loop-%s-%d", lsn, i)); err != nil {
			return err
		}
		t.add("loop-worker", w.task, w.rss)
		t.notes["loop-worker-wall"] = append(t.notes["loop-worker-wall"], w.wall)
	}
	fr.results(in, t, largest)
	return nil
}

// affix runs r8im affix with the far case's options against host, with
// its own cache directory (the layer-digest cache and upload sessions live
// under XDG_CACHE_HOME), and returns the run and the image reference.
func (fr *farRun) affix(ctx context.Context, host, repo, cache string, input ...string) (runResult, string, error) {
	b := fr.b
	args := []string{"affix", "-q", "--json", "--base", withHost(b.base, host), "--dest", host + "/" + repo + ":v1", "--created", created}
	args = append(append(args, input...), farAffixArgs...)
	r, err := b.exec(ctx, []string{"XDG_CACHE_HOME=" + cache}, nil, b.bins.r8im, args...)
	if err != nil {
		return r, "", err
	}
	var out affixOut
	if err := json.Unmarshal(r.stdout, &out); err != nil || out.Ref == "" {
		return r, "", fmt.Errorf("reading r8im affix --json (%q): %v", r.stdout, err)
	}
	return r, out.Ref, nil
}

// cacheDir is the cache directory of one affix run: new for each run, so
// that a run never reuses the digests of another (the --dir run's is used
// again by the re-publish).
func (fr *farRun) cacheDir(in *farInput, what string, i int) string {
	return filepath.Join(fr.b.dir, "far-cache", fmt.Sprintf("%s-%s-%d", in.sn, what, i))
}

// worker runs one affix task of the S3 prefix through a fresh worker
// pushing to host, with an empty Redis database (no cached digests).
func (fr *farRun) worker(ctx context.Context, in *farInput, host, name string) (workerRun, error) {
	b := fr.b
	if err := fr.rdb.FlushDB(ctx).Err(); err != nil {
		return workerRun{}, fmt.Errorf("emptying Redis database %d: %w", farRedisDB, err)
	}
	env := append([]string{fmt.Sprintf("REDIS_URL=redis://%s/%d", b.svc.redisAddr, farRedisDB)}, farWorkerEnv...)
	return b.workerAffix(ctx, fr.records, "worker-"+name, "bench-"+name, env,
		"--base", withHost(b.base, host), "--weights", in.prefix, "--dest", fmt.Sprintf("%s/far/worker-%s:v1", host, name))
}

func (fr *farRun) results(in *farInput, t *farTimes, largest bool) {
	b := fr.b
	sn, n := in.sn, in.tarSize
	what := fmt.Sprintf("%s as %d shards", sn, in.shards)
	bw := humanBW(b.cfg.FarBandwidth) + "/s"
	raw := median(t.secs["raw"])
	b.add(Result{Case: "far-raw-" + sn, Title: fmt.Sprintf("far (%s per connection): raw floor, one blob PUT, %s", bw, what), Size: n, Unit: "s",
		Runs: t.secs["raw"], Ratio: 1, RatioOf: "÷ floor", Bytes: n, Note: "one connection: the single-stream floor"})
	for _, k := range []string{"tar", "dir", "worker"} {
		title := map[string]string{
			"tar":    "far: r8im affix --tar (auto, 4 jobs), ",
			"dir":    "far: r8im affix --dir (auto, 4 jobs), ",
			"worker": "far: worker from an S3 prefix (R8IM_UPLOAD_JOBS=4), ",
		}[k] + what
		m := median(t.secs[k])
		res := Result{Case: "far-" + k + "-" + sn, Title: title, Size: n, Unit: "s", Runs: t.secs[k], Ratio: m / raw, RatioOf: "÷ floor",
			Target: "≤ 0.35", Holds: holds(m/raw <= 0.35), PeakRSS: medianInt(t.rss[k])}
		switch k {
		case "tar":
			res.Note = fmt.Sprintf("%d weights layers", t.layers)
		case "worker":
			res.Note = fmt.Sprintf("task time from its record; enqueue→result wall %.2fs", median(t.notes["worker-wall"]))
		}
		b.add(res)
	}
	c, tr := median(t.secs["crane"]), median(t.secs["tar"])
	b.add(Result{Case: "far-crane-" + sn, Title: fmt.Sprintf("far: crane append, one -f per shard + one of the small files, %s", what), Size: n, Unit: "s",
		Runs: t.secs["crane"], Ratio: c / tr, RatioOf: "÷ r8im --tar", Target: "≥ 2.0", Holds: holds(c/tr >= 2), PeakRSS: medianInt(t.rss["crane"]),
		Note: fmt.Sprintf("%.2f× floor", c/raw)})
	if largest {
		m := median(t.secs["republish"])
		b.add(Result{Case: "far-republish-" + sn, Title: "far: re-publish of the --dir image to another repository, " + what, Size: n, Unit: "s",
			Runs: t.secs["republish"], Target: "< 1 s, 0 B", Holds: holds(m < 1 && t.repub == 0), Bytes: t.repub, PeakRSS: medianInt(t.rss["republish"]),
			Note: fmt.Sprintf("bytes: layer bytes through the proxy (most of any run); all blobs incl. configs %d B, of which uploaded %d B%s", t.repubA, t.repubU, t.others)})
	}
	lraw := median(t.secs["loop-raw"])
	b.add(Result{Case: "far-loop-raw-" + sn, Title: "loopback: raw floor, one blob PUT, " + what, Size: n, Unit: "s",
		Runs: t.secs["loop-raw"], Ratio: 1, RatioOf: "÷ raw", Bytes: n})
	lt := median(t.secs["loop-tar"])
	b.add(Result{Case: "far-loop-tar-" + sn, Title: "loopback: r8im affix --tar (auto, 4 jobs), " + what, Size: n, Unit: "s",
		Runs: t.secs["loop-tar"], Ratio: lt / lraw, RatioOf: "÷ raw", Target: "≤ 1.00", Holds: holds(lt/lraw <= 1), PeakRSS: medianInt(t.rss["loop-tar"])})
	lw := median(t.secs["loop-worker"])
	b.add(Result{Case: "far-loop-worker-" + sn, Title: "loopback: worker from an S3 prefix (R8IM_UPLOAD_JOBS=4), " + what, Size: n, Unit: "s",
		Runs: t.secs["loop-worker"], Ratio: lw / lraw, RatioOf: "÷ raw", PeakRSS: medianInt(t.rss["loop-worker"]),
		Note: fmt.Sprintf("task time from its record; enqueue→result wall %.2fs", median(t.notes["loop-worker-wall"]))})
	fr.rss.put("r8im", in.size, medianInt(t.rss["loop-tar"]))
	fr.rss.put("worker", in.size, medianInt(t.rss["loop-worker"]))
}

// memoryRows reports the loopback peak RSS at the largest input against
// its target and its growth from the smallest.
func (fr *farRun) memoryRows(small, large int64) {
	b := fr.b
	for _, kind := range []string{"r8im", "worker"} {
		title := map[string]string{"r8im": "r8im affix --tar (auto, 4 jobs)", "worker": "worker from an S3 prefix (4 jobs)"}[kind]
		limit := map[string]float64{"r8im": 200, "worker": 300}[kind]
		t := fr.rss[kind]
		peak := float64(t[large]) / (1 << 20)
		b.add(Result{Case: "far-memory-" + kind + "-" + sizeName(large), Title: "loopback: peak RSS of " + title + ", " + sizeName(large), Size: large, Unit: "MiB",
			Median: peak, Target: fmt.Sprintf("≤ %.0f MiB", limit), Holds: holds(peak <= limit), PeakRSS: t[large]})
		if small != large && t[small] > 0 {
			g := float64(t[large]) / float64(t[small])
			b.add(Result{Case: "far-memory-growth-" + kind, Title: fmt.Sprintf("loopback: peak RSS growth of %s, %s → %s", title, sizeName(small), sizeName(large)), Unit: "MiB",
				Median: peak, Ratio: g, RatioOf: "× " + sizeName(small), Target: "≤ 1.20", Holds: holds(g <= 1.2),
				Note: fmt.Sprintf("%.0f MiB at %s", float64(t[small])/(1<<20), sizeName(small))})
		}
	}
}

// prepare writes a far input of size bytes in shards shards under the work
// directory and puts its files into MinIO.
func (fr *farRun) prepare(ctx context.Context, size int64, shards int) (*farInput, error) {
	b := fr.b
	sn := sizeName(size)
	root := filepath.Join(b.dir, "far-"+sn)
	in := &farInput{size: size, shards: shards, sn: sn, dir: filepath.Join(root, "weights"), tar: filepath.Join(root, "weights.tar")}
	b.logf("far %s: writing %d shards, config.json and tokenizer.json into a directory, a .tar of it and a tarball per file", sn, shards)
	if err := writeWeightsDir(in.dir, size, shards, 11); err != nil {
		return in, err
	}
	var err error
	if in.tarSum, in.tarSize, err = writeDirTar(in.tar, in.dir); err != nil {
		return in, err
	}
	if in.craneTars, err = writeCraneTars(filepath.Join(root, "crane"), in.dir); err != nil {
		return in, err
	}
	b.logf("far %s: putting the files under s3://%s/far/%s/", sn, b.svc.s3.bucket, sn)
	entries, err := os.ReadDir(in.dir)
	if err != nil {
		return in, err
	}
	for _, e := range entries {
		key := "far/" + sn + "/" + e.Name()
		if _, err := b.svc.putObject(ctx, key, filepath.Join(in.dir, e.Name())); err != nil {
			return in, err
		}
		in.keys = append(in.keys, key)
	}
	in.prefix = "s3://" + b.svc.s3.bucket + "/far/" + sn + "/"
	return in, nil
}

// remove deletes the input's files and objects.
func (in *farInput) remove(ctx context.Context, b *bench) {
	for _, k := range in.keys {
		_, _ = b.svc.s3.client().DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(b.svc.s3.bucket), Key: aws.String(k)})
	}
	if in.dir != "" {
		_ = os.RemoveAll(filepath.Dir(in.dir))
	}
}

// writeWeightsDir writes a model directory: shards fp16-like
// model-0000i-of-0000n.safetensors files of size/shards bytes (the
// generator's bytes, seed seed), its config.json and a tokenizer.json of a
// few KiB.
func writeWeightsDir(dir string, size int64, shards int, seed uint64) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	pr, pw := io.Pipe()
	go func() {
		_, err := testenv.WriteWeights(pw, testenv.WeightsSpec{Files: shards, FileSize: size / int64(shards), Seed: seed})
		pw.CloseWithError(err)
	}()
	defer pr.Close()
	tr := tar.NewReader(pr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("generating weights: %w", err)
		}
		if h.Typeflag != tar.TypeReg || strings.Contains(h.Name, "/") {
			continue
		}
		if err := writeFile(filepath.Join(dir, h.Name), tr); err != nil {
			return err
		}
	}
	tok := map[string]any{"version": "1.0", "model": map[string]any{"type": "BPE", "vocab": vocab(200)}}
	js, err := json.MarshalIndent(tok, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "tokenizer.json"), js, 0o644)
}

func vocab(n int) map[string]int {
	v := make(map[string]int, n)
	for i := range n {
		v[fmt.Sprintf("tok%03d", i)] = i
	}
	return v
}

func writeFile(path string, r io.Reader) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// writeDirTar writes dir as r8im affix --dir reads it (uncompressed, in
// path order) to path and returns its sha256 and size.
func writeDirTar(path, dir string) (string, int64, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return "", 0, err
	}
	defer root.Close()
	f, err := os.Create(path)
	if err != nil {
		return "", 0, err
	}
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(f, h)}
	err = dirtar.Write(cw, root)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", 0, fmt.Errorf("writing %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), cw.n, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// writeCraneTars writes, under out, one tarball per shard of dir (each
// holding that file) and one holding the small files, and returns their
// paths: crane append's inputs for the same content.
func writeCraneTars(out, dir string) ([]string, error) {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var paths, small []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".safetensors") {
			p := filepath.Join(out, strings.TrimSuffix(e.Name(), ".safetensors")+".tar")
			if err := tarFiles(p, dir, e.Name()); err != nil {
				return nil, err
			}
			paths = append(paths, p)
		} else {
			small = append(small, e.Name())
		}
	}
	if len(small) > 0 {
		p := filepath.Join(out, "small-files.tar")
		if err := tarFiles(p, dir, small...); err != nil {
			return nil, err
		}
		paths = append(paths, p)
	}
	return paths, nil
}

// tarFiles writes a tar of the files names of dir to path.
func tarFiles(path, dir string, names ...string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	err = func() error {
		for _, n := range names {
			src, err := os.Open(filepath.Join(dir, n))
			if err != nil {
				return err
			}
			st, err := src.Stat()
			if err == nil {
				err = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: n, Mode: 0o644, Size: st.Size(), ModTime: baseTime, Format: tar.FormatPAX})
			}
			if err == nil {
				_, err = io.Copy(tw, src)
			}
			src.Close()
			if err != nil {
				return err
			}
		}
		return tw.Close()
	}()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// weightsLayers is the number of layers of ref beyond those of base.
func weightsLayers(ctx context.Context, ref, base string) (int, error) {
	count := func(s string) (int, error) {
		r, err := name.ParseReference(s)
		if err != nil {
			return 0, err
		}
		img, err := remote.Image(r, remote.WithContext(ctx))
		if err != nil {
			return 0, fmt.Errorf("reading %s: %w", s, err)
		}
		m, err := img.Manifest()
		if err != nil {
			return 0, err
		}
		return len(m.Layers), nil
	}
	n, err := count(ref)
	if err != nil {
		return 0, err
	}
	nb, err := count(base)
	return n - nb, err
}

// proxyLayerBytes returns the blob bytes that crossed the proxy since its last
// Reset (uploaded or downloaded) other than the configs of refs, all of
// them, and which blobs those others were (digest and bytes, for the note).
func proxyLayerBytes(ctx context.Context, p *testenv.Proxy, refs ...string) (layers, all int64, others string, err error) {
	configs, err := configDigests(ctx, refs...)
	if err != nil {
		return 0, 0, "", err
	}
	blobs := p.Blobs()
	for _, d := range slices.Sorted(maps.Keys(blobs)) {
		n := blobs[d]
		all += n
		if !configs[d] && n > 0 {
			layers += n
			others += fmt.Sprintf("; %.19s… %d B", d, n)
		}
	}
	return layers, all, others, nil
}

// humanBW spells a bandwidth in SI units: 50 MB, 12.5 MB.
func humanBW(n int64) string {
	switch {
	case n >= 1e6:
		return strings.TrimSuffix(fmt.Sprintf("%.1f", float64(n)/1e6), ".0") + " MB"
	case n >= 1e3:
		return strings.TrimSuffix(fmt.Sprintf("%.1f", float64(n)/1e3), ".0") + " kB"
	}
	return fmt.Sprintf("%d B", n)
}
