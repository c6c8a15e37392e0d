package main

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"github.com/r8im/r8im/imageops"
)

func newLayersCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "layers REF",
		Short: "Summarize an image's layers (reads manifest and config only)",
		Long: `layers prints one row per layer: index, digest, media type, compressed
size, diffID, the history command that made it, and whether it holds weights
(r8im's markers, the "# weights" history convention, cog's COPY --from=weights,
or a COPY . /src layer that may carry src/weights). No layer is downloaded.`,
		Example: `  r8im layers r8.im/acme/sdxl-ft@sha256:f540…
  r8im layers localhost:5000/models/ft:v2 --platform all --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, progress, err := g.options(cmd)
			if err != nil {
				return err
			}
			res, err := imageops.Layers(cmd.Context(), args[0], opts...)
			progress.Done()
			if err != nil {
				return err
			}
			if g.json {
				return g.printResult(cmd, res, "", nil)
			}
			for _, r := range res {
				printLayers(cmd.OutOrStdout(), r)
			}
			return nil
		},
	}
}

func printLayers(out io.Writer, r imageops.LayersResult) {
	fmt.Fprintf(out, "%s  %s", r.Ref, r.MediaType)
	if r.Platform != "" {
		fmt.Fprintf(out, "  %s", r.Platform)
	}
	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tDIGEST\tSIZE\tMEDIA TYPE\tDIFF ID\tWEIGHTS\tCREATED BY")
	for _, l := range r.Layers {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", l.Index, short(l.Digest.String()), humanize.IBytes(uint64(l.Size)),
			l.MediaType, short(l.DiffID.String()), l.Weights, cut(l.CreatedBy, 60))
	}
	fmt.Fprintf(tw, "\t%d layers\t%s\t\t\tweights %s\t\n", len(r.Layers), humanize.IBytes(uint64(r.TotalSize)), humanize.IBytes(uint64(r.WeightsSize)))
	_ = tw.Flush()
}

func short(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}

func cut(s string, n int) string {
	if len([]rune(s)) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}
