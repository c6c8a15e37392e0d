package cli

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/dustin/go-humanize"

	"github.com/r8im/r8im/imageops"
)

// PrintLayers writes the `r8im layers` table of one image: a header line
// (reference, media type, platform), one row per layer and the totals.
func PrintLayers(out io.Writer, r imageops.LayersResult) {
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
