// Command r8im-bench runs r8im's end-to-end benchmark (make bench): it
// starts distribution, Redis and MinIO on loopback, measures affix, remix,
// zstd, the queue and a far registry (an upload cap per connection) against
// the raw registry floor, crane and regctl, prints a table and writes JSON.
// See docs/performance.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/dustin/go-humanize"

	"github.com/r8im/r8im/internal/bench"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "r8im-bench:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		cfg   bench.Config
		sizes = flag.String("sizes", env("BENCH_SIZES", "1GiB,4GiB"), "weights tarball sizes for affix, comma-separated ($BENCH_SIZES)")
		zsize = flag.String("zstd-size", env("BENCH_ZSTD_SIZE", "1GiB"), "total size of the 3-layer image for zstd ($BENCH_ZSTD_SIZE)")
		cases = flag.String("cases", env("BENCH_CASES", strings.Join(bench.AllCases, ",")), "case groups to run ($BENCH_CASES)")
		out   = flag.String("o", env("BENCH_OUT", "bench/results.json"), "JSON report path ($BENCH_OUT)")
		farBW = flag.String("far-bandwidth", env("BENCH_FAR_BANDWIDTH", "50MB"), "far case: upload cap per connection, bytes per second, e.g. 50MB or 12500000 ($BENCH_FAR_BANDWIDTH)")
	)
	flag.IntVar(&cfg.Runs, "runs", envInt("BENCH_RUNS", 3), "runs per case; the median is reported ($BENCH_RUNS)")
	flag.IntVar(&cfg.Shards, "shards", 8, "files per weights tarball")
	flag.IntVar(&cfg.QueueTasks, "queue-tasks", envInt("BENCH_QUEUE_TASKS", 10000), "tasks per queue run ($BENCH_QUEUE_TASKS)")
	flag.StringVar(&cfg.WorkDir, "workdir", os.Getenv("BENCH_WORKDIR"), "directory for data and logs (default: a new one in $TMPDIR, removed at the end)")
	flag.BoolVar(&cfg.Keep, "keep", false, "keep the work directory")
	flag.Parse()

	for _, s := range strings.Split(*sizes, ",") {
		n, err := humanize.ParseBytes(strings.TrimSpace(s))
		if err != nil || n == 0 || n > 1<<40 {
			return fmt.Errorf("-sizes: %q is not a size such as 1GiB", s)
		}
		cfg.Sizes = append(cfg.Sizes, int64(n))
	}
	n, err := humanize.ParseBytes(*zsize)
	if err != nil || n > 1<<40 {
		return fmt.Errorf("-zstd-size: %q is not a size such as 1GiB", *zsize)
	}
	cfg.ZstdSize = int64(n)
	bw, err := humanize.ParseBytes(*farBW)
	if err != nil || bw < 1000 || bw > 1<<40 {
		return fmt.Errorf("-far-bandwidth / BENCH_FAR_BANDWIDTH: %q is not a bandwidth such as 50MB (bytes per second, at least 1000)", *farBW)
	}
	cfg.FarBandwidth = int64(bw)
	for _, c := range strings.Split(*cases, ",") {
		if c = strings.TrimSpace(c); c != "" {
			cfg.Cases = append(cfg.Cases, c)
		}
	}
	cfg.Log = os.Stderr

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := bench.Run(ctx, cfg)
	if rep != nil && len(rep.Results) > 0 {
		if werr := rep.WriteJSON(*out); werr != nil {
			fmt.Fprintln(os.Stderr, "r8im-bench: writing", *out+":", werr)
		} else {
			fmt.Fprintln(os.Stderr, "r8im-bench: wrote", *out)
		}
		fmt.Println()
		_ = rep.PrintTable(os.Stdout)
	}
	return err
}

func env(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func envInt(k string, def int) int {
	var n int
	if v := os.Getenv(k); v != "" {
		if _, err := fmt.Sscan(v, &n); err == nil {
			return n
		}
	}
	return def
}
