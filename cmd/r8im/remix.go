package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/r8im/r8im/imageops"
	"github.com/r8im/r8im/internal/cli"
)

func newRemixCmd(g *globals) *cobra.Command {
	var (
		req     imageops.RemixRequest
		created string
	)
	cmd := &cobra.Command{
		Use:   "remix --base A --weights B --dest REPO[:TAG]",
		Short: "Combine the code of image A with the weights layers of image B",
		Long: `remix builds a new image from A's layers without A's weights layers, plus
B's weights layers, keeping A's config (env, cmd, labels) and a history that
lines up with the layers. Only manifests and configs are read: on one registry
every layer is mounted and no layer byte moves. The creation time defaults to
B's, so the same A and B always give the same digest.`,
		Example: `  r8im remix --base r8.im/acme/sdxl:v3 --weights r8.im/acme/sdxl-ft:v1 --dest r8.im/acme/sdxl-ft:v1-on-v3
  r8im remix --base localhost:5000/code:v2 --weights localhost:5000/ft:v9 --dest localhost:5000/ft:v9-code-v2 --platform all --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts, progress, err := g.options(cmd)
			if err != nil {
				return err
			}
			if created != "" {
				if req.Created, err = cli.CreatedTime(created); err != nil {
					return err
				}
			}
			res, err := imageops.Remix(cmd.Context(), req, opts...)
			progress.Done()
			if err != nil {
				return err
			}
			if !g.quiet && !g.json {
				fmt.Fprintf(cmd.ErrOrStderr(), "removed %d weights layer(s) of the base, added %d; moved %d bytes (mounted %d blobs)\n",
					len(res.Removed), len(res.Added), res.Transfer.UploadedBytes+res.Transfer.DownloadedBytes, res.Transfer.MountedBlobs)
			}
			return g.printResult(cmd, res, res.Ref.String(), res.Stages, res.Transfer.Notes...)
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Base, "base", "", "image A, whose code layers and config are kept (required)")
	f.StringVar(&req.Weights, "weights", "", "image B, whose weights layers are added (required)")
	f.StringVar(&req.Dest, "dest", "", "destination host/repo[:tag] (required)")
	f.StringVar(&created, "created", "", "creation time, RFC 3339 (default: B's creation time)")
	for _, name := range []string{"base", "weights", "dest"} {
		_ = cmd.MarkFlagRequired(name)
	}
	return cmd
}
