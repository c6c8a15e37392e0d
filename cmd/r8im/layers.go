package main

import (
	"github.com/spf13/cobra"

	"github.com/r8im/r8im/imageops"
	"github.com/r8im/r8im/internal/cli"
)

func newLayersCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "layers REF",
		Aliases: []string{"report"}, // the original r8im's name
		Short:   "Summarize an image's layers (reads manifest and config only)",
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
				cli.PrintLayers(cmd.OutOrStdout(), r)
			}
			return nil
		},
	}
}

// short abbreviates a digest to its algorithm and first 12 hex digits.
func short(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}
