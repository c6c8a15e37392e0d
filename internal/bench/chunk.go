package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/r8im/r8im/internal/testenv"
)

// chunkBodyCap is the request-body cap of the capped front: the 100 MB of
// Cloudflare's smaller plans, read as 100 MiB; a front that means 10^8 bytes
// refuses the first 96 MiB chunk with a 413, and r8im halves its chunks.
const chunkBodyCap = 100 << 20

// chunkRuns measures, per run, what chunked uploads cost: `r8im affix
// --compression none` in one request (--chunk-size 0), to compare with the
// default (96 MiB chunks, measured by the affix case), and chunked through a
// front that refuses bodies over 100 MiB, where one request fails.
type chunkRuns struct {
	single, capped []float64
	largest        int64
	proxy          *testenv.Proxy
}

func (b *bench) startChunk() (*chunkRuns, error) {
	p, err := testenv.NewProxy(b.svc.regHost, testenv.ProxyBodyCap(chunkBodyCap))
	if err != nil {
		return nil, fmt.Errorf("starting the capped front: %w", err)
	}
	return &chunkRuns{proxy: p}, nil
}

func (c *chunkRuns) close() { c.proxy.Close() }

func (b *bench) chunkRun(ctx context.Context, c *chunkRuns, sn, tarPath string, i int) error {
	host := b.svc.regHost
	b.logf("%s run %d/%d: r8im affix --compression none --chunk-size 0", sn, i, b.cfg.Runs)
	r, err := b.exec(ctx, nil, nil, b.bins.r8im, "affix", "-q", "--json", "--base", b.base, "--chunk-size", "0",
		"--dest", fmt.Sprintf("%s/models/single-%s-%d", host, strings.ToLower(sn), i), "--tar", tarPath, "--compression", "none", "--created", created)
	if err != nil {
		return err
	}
	c.single = append(c.single, r.seconds)

	b.logf("%s run %d/%d: r8im affix --compression none through a front capping bodies at 100 MiB", sn, i, b.cfg.Runs)
	base := strings.Replace(b.base, host, c.proxy.Host, 1)
	r, err = b.exec(ctx, nil, nil, b.bins.r8im, "affix", "-q", "--json", "--base", base,
		"--dest", fmt.Sprintf("%s/models/capped-%s-%d", c.proxy.Host, strings.ToLower(sn), i), "--tar", tarPath, "--compression", "none", "--created", created)
	if err != nil {
		return err
	}
	var out affixOut
	if err := json.Unmarshal(r.stdout, &out); err != nil {
		return fmt.Errorf("reading r8im affix --json: %w", err)
	}
	c.capped = append(c.capped, r.seconds)
	c.largest = max(c.largest, c.proxy.Stats().LargestBody)
	return nil
}

// chunkResults adds the rows: one request against the raw floor, the
// default chunks against one request (the cost of chunking), and the capped
// front against the raw floor, with the largest body it saw.
func (b *bench) chunkResults(c *chunkRuns, sn string, size int64, chunked []float64, rawMed float64) {
	single := median(c.single)
	b.add(Result{Case: "affix-single-" + sn, Title: "r8im affix --compression none --chunk-size 0 (one request), " + sn, Size: size, Unit: "s",
		Runs: c.single, Ratio: single / rawMed, RatioOf: "÷ raw"})
	if len(chunked) > 0 {
		m := median(chunked)
		b.add(Result{Case: "affix-chunked-" + sn, Title: "r8im affix --compression none, 96 MiB chunks (default), " + sn, Size: size, Unit: "s",
			Runs: chunked, Ratio: m / single, RatioOf: "÷ one request", Target: "≤ 1.05", Holds: holds(m/single <= 1.05)})
	}
	capped := median(c.capped)
	b.add(Result{Case: "affix-capped-" + sn, Title: "r8im affix --compression none through a front refusing bodies over 100 MiB, " + sn, Size: size, Unit: "s",
		Runs: c.capped, Ratio: capped / rawMed, RatioOf: "÷ raw", Bytes: c.largest,
		Target: "largest body ≤ 100 MiB", Holds: holds(c.largest <= chunkBodyCap),
		Note: fmt.Sprintf("largest request body %d bytes; the test proxy itself costs time", c.largest)})
}
