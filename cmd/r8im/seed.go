package main

import (
	"fmt"
	"os"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/spf13/cobra"

	"github.com/r8im/r8im/imageops"
)

// The original r8im's verbs: report (layers) and recompress (zstd) are
// aliases; add-layer is affix with the original's positional arguments;
// clone copies an image to another repository.

func newAddLayerCmd(g *globals) *cobra.Command {
	var dest string
	cmd := &cobra.Command{
		Use:   "add-layer IMAGE LAYER [--dest REPO[:TAG]]",
		Short: "Add a tarball as a new layer on top of IMAGE (the original r8im's form of affix)",
		Long: `add-layer is affix with the original r8im's positional arguments: IMAGE is the
base and LAYER the tarball (or a directory). The new image is pushed to IMAGE's
repository, by digest only (IMAGE's tag is not moved), unless --dest names
another repository or tag. Everything affix says about paths, links and
reproducibility holds, and the weights become one layer (affix --layers single);
use affix for its other flags and layouts.`,
		Example: `  r8im add-layer r8.im/acme/sdxl:v1 weights.tar
  r8im add-layer r8.im/acme/sdxl:v1 ./weights --dest r8.im/acme/sdxl:v2`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, progress, err := g.options(cmd)
			if err != nil {
				return err
			}
			defer progress.Done()
			// One layer, as the original's add-layer made.
			req := imageops.AffixRequest{Base: args[0], Dest: dest, Layout: imageops.LayoutSingle}
			if req.Dest == "" {
				ref, err := name.ParseReference(args[0], name.WithDefaultRegistry(g.cfg.Registry.Host))
				if err != nil {
					return fmt.Errorf("IMAGE %q is not an image reference: %w", args[0], err)
				}
				req.Dest = ref.Context().String()
			}
			st, err := os.Stat(args[1])
			if err != nil {
				return fmt.Errorf("LAYER %s: %w", args[1], err)
			}
			if st.IsDir() {
				if err := dirWeights(&req, args[1]); err != nil {
					return fmt.Errorf("LAYER %s: %w", args[1], err)
				}
			} else {
				opt, err := fileWeights(&req, args[1], st)
				if err != nil {
					return fmt.Errorf("LAYER %s: %w", args[1], err)
				}
				opts = append(opts, opt)
			}
			res, err := imageops.Affix(cmd.Context(), req, opts...)
			progress.Done()
			if err != nil {
				return err
			}
			return g.printResult(cmd, res, res.Ref.String(), res.Stages, res.Transfer.Notes...)
		},
	}
	cmd.Flags().StringVar(&dest, "dest", "", "destination repository and optional tag (default: IMAGE's repository, by digest)")
	return cmd
}

func newCloneCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "clone SRC DEST",
		Short: "Copy an image to another repository: every blob mounted, nothing downloaded",
		Long: `clone copies SRC to DEST unchanged. On the same registry every blob is
mounted from SRC's repository, so no layer byte moves; from another registry
the layers are copied (and a note says so). A single image keeps its digest;
--platform all copies every platform of an index into a new index.`,
		Example: `  r8im clone r8.im/acme/sdxl:v1 r8.im/acme/sdxl-staging:v1
  r8im clone localhost:5000/base/cog@sha256:d0b0… localhost:5000/alice/cog --json`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, progress, err := g.options(cmd)
			if err != nil {
				return err
			}
			defer progress.Done()
			res, err := imageops.Clone(cmd.Context(), imageops.CloneRequest{Source: args[0], Dest: args[1]}, opts...)
			progress.Done()
			if err != nil {
				return err
			}
			return g.printResult(cmd, res, res.Ref.String(), res.Stages, res.Transfer.Notes...)
		},
	}
}
