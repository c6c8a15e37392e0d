package main

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"github.com/r8im/r8im/imageops"
)

// defaultMinSize is --min-size's default: below it zstd gains a few bytes
// on a small layer for the price of an upload.
const defaultMinSize = "1MiB"

func newZstdCmd(g *globals) *cobra.Command {
	var (
		req     imageops.ZstdRequest
		minSize string
		jobs    int
	)
	cmd := &cobra.Command{
		Use:     "zstd REF [DEST | --dest REPO[:TAG]] [--level 3] [--min-size 1MiB] [--jobs 4]",
		Aliases: []string{"recompress"}, // the original r8im's name
		Short:   "Recompress an image's layers to zstd, keeping its diffIDs and config",
		Long: `zstd recompresses the layers of an image to zstd, for faster pulls. Each
layer is converted in one pass: downloaded from the registry, decompressed
(gzip or uncompressed), compressed with zstd, hashed and uploaded as it
streams, --jobs layers at a time; memory does not grow with layer size.

The uncompressed content of every layer is checked against the diffID in the
image config while it streams: a mismatch stops everything and nothing is
pushed. The config is kept byte for byte (created, env, labels, history and
diffIDs), so the result runs exactly like the source. The result is an OCI
image (a Docker image's types become their OCI equivalents); each
recompressed layer is annotated with im.r8.zstd.source = the digest it came
from.

Layers already zstd, empty layers and layers smaller than --min-size
(compressed size; default 1MiB, where zstd saves too little to be worth an
upload; --min-size 0 recompresses every layer) are kept as they are and
mounted, never re-uploaded. Running zstd on its own output changes nothing.
With --platform all an index is recompressed platform by platform (a layer
shared by platforms is converted once) into a new OCI index.`,
		Example: `  r8im zstd r8.im/acme/sdxl-ft:v2 --dest r8.im/acme/sdxl-ft:v2-zstd
  r8im recompress r8.im/acme/sdxl-ft:v2 r8.im/acme/sdxl-ft:v2-zstd   # the original r8im's form
  r8im zstd localhost:5000/models/ft@sha256:f540… --dest localhost:5000/models/ft-zstd --level 9 --min-size 0
  r8im zstd base:v1 --dest base-zstd:v1 --platform all --jobs 8 --json`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := humanize.ParseBytes(minSize)
			if err != nil {
				return fmt.Errorf("--min-size %q is not a size; use bytes or units such as 0, 512KiB, 1MiB, 10MB", minSize)
			}
			if n > 1<<62 {
				return fmt.Errorf("--min-size %q is too large", minSize)
			}
			req.MinSize = int64(n)
			if jobs < 1 {
				return fmt.Errorf("--jobs %d: give at least 1", jobs)
			}
			if cmd.Flags().Changed("level") && req.Level == 0 {
				return fmt.Errorf("--level 0 is not a level; use 1 (fastest) to 22 (smallest), or leave --level out for %d", imageops.DefaultZstdLevel)
			}
			opts, progress, err := g.options(cmd)
			if err != nil {
				return err
			}
			defer progress.Done()
			req.Source = args[0]
			switch {
			case len(args) == 2 && req.Dest != "" && req.Dest != args[1]:
				return fmt.Errorf("two destinations: %s and --dest %s; give one", args[1], req.Dest)
			case len(args) == 2:
				req.Dest = args[1]
			case req.Dest == "":
				return fmt.Errorf("no destination: give it as the second argument or with --dest, e.g. r8im zstd %s %s-zstd", args[0], args[0])
			}
			// The layer ids of the sessions name source digests and level.
			opts = append(opts, imageops.WithJobs(jobs), resumable("zstd", req.Source, req.Dest))
			res, err := imageops.Recompress(cmd.Context(), req, opts...)
			progress.Done()
			if err != nil {
				return err
			}
			if !g.json && !g.quiet {
				printZstdLayers(cmd.ErrOrStderr(), res)
			}
			return g.printResult(cmd, res, res.Ref.String(), res.Stages, res.Transfer.Notes...)
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Dest, "dest", "", "destination repository and optional tag, host/repo[:tag] (required)")
	f.IntVar(&req.Level, "level", imageops.DefaultZstdLevel, "zstd level, 1 (fastest) to 22 (smallest)")
	f.StringVar(&minSize, "min-size", defaultMinSize, "keep layers whose compressed size is below this as they are (0: recompress all)")
	f.IntVar(&jobs, "jobs", 4, "layers recompressed at the same time")
	return cmd
}

// printZstdLayers writes one row per distinct layer, old → new size, and a
// total.
func printZstdLayers(out io.Writer, res *imageops.ZstdResult) {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SOURCE LAYER\tOLD\t\tNEW\tRESULT")
	var before, after int64
	converted := 0
	for _, l := range res.Layers {
		before += l.OldSize
		after += l.NewSize
		outcome := "kept: " + l.Reason
		if l.Recompressed {
			converted++
			outcome = fmt.Sprintf("zstd %s (%s)", short(l.Digest.String()), change(l.OldSize, l.NewSize))
		}
		fmt.Fprintf(tw, "%s\t%s\t→\t%s\t%s\n", short(l.Source.String()), humanize.IBytes(uint64(l.OldSize)), humanize.IBytes(uint64(l.NewSize)), outcome)
	}
	fmt.Fprintf(tw, "%d of %d layers recompressed\t%s\t→\t%s\t%s\n", converted, len(res.Layers),
		humanize.IBytes(uint64(before)), humanize.IBytes(uint64(after)), change(before, after))
	_ = tw.Flush()
}

// change is the relative size change, e.g. "-23.4%".
func change(before, after int64) string {
	if before == 0 {
		return "±0%"
	}
	return fmt.Sprintf("%+.1f%%", 100*float64(after-before)/float64(before))
}
