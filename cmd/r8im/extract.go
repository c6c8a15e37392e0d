package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/r8im/r8im/imageops"
	"github.com/r8im/r8im/internal/cli"
)

func newExtractCmd(g *globals) *cobra.Command {
	var (
		output string
		dir    string
		jobs   int
		eo     imageops.ExtractOptions
	)
	cmd := &cobra.Command{
		Use:   "extract REF [-o FILE|-] [--dir DIR] [--jobs 4]",
		Short: "Stream only the weights out of an image, as a tar or into a directory",
		Long: `extract finds an image's weights layers (r8im's markers, the "# weights"
history convention, cog's COPY --from=weights, else the src/weights files of
COPY . /src layers), downloads only those, applies whiteouts between them with
the newest layer winning, and writes a tar (stdout by default) or files under
--dir. Paths escaping --dir are refused.

--jobs layers are downloaded at once: the newest is streamed as it is
written, the next ones wait in temp files (next to -o FILE, inside --dir,
else in TMPDIR) until their turn, each digest-checked; the output is the
same for any --jobs, and at most --jobs compressed layers sit on disk.`,
		Example: `  r8im extract r8.im/acme/sdxl-ft:v2 -o weights.tar
  r8im extract localhost:5000/models/ft:v2 --dir ./weights --strip-target
  r8im extract r8.im/acme/llama-70b:v1 --dir ./weights --jobs 8`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if dir != "" && output != "" {
				return fmt.Errorf("give -o (a tar) or --dir (files), not both")
			}
			if jobs < 1 || jobs > maxExtractJobs {
				return fmt.Errorf("--jobs %d: give 1 to %d layers downloaded at once (1 downloads one layer after another)", jobs, maxExtractJobs)
			}
			opts, progress, err := g.options(cmd)
			if err != nil {
				return err
			}
			opts = append(opts, imageops.WithJobs(jobs))
			var res *imageops.ExtractResult
			if dir != "" {
				res, err = imageops.ExtractToDir(cmd.Context(), args[0], dir, eo, opts...)
			} else {
				res, err = extractTar(cmd, args[0], output, eo, opts)
			}
			progress.Done()
			if err != nil {
				return err
			}
			if !g.quiet && !g.json {
				fmt.Fprintf(cmd.ErrOrStderr(), "extracted %d files (%d bytes) from %d layer(s) of %s\n", res.Files, res.Bytes, len(res.Layers), res.Ref)
			}
			if g.json {
				if output == "" && dir == "" {
					return fmt.Errorf("--json needs -o FILE or --dir: stdout carries the tar")
				}
				return g.printResult(cmd, res, "", nil)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&output, "output", "o", "", "write the tar to FILE (- or empty: stdout)")
	f.StringVar(&dir, "dir", "", "write the files under DIR instead of a tar")
	f.BoolVar(&eo.StripTarget, "strip-target", false, "write paths relative to the weights directory (src/weights/a → a)")
	f.StringVar(&eo.Target, "target", imageops.DefaultTarget, "the weights directory in the image")
	f.IntVar(&jobs, "jobs", 4, fmt.Sprintf("weights layers downloaded at once (1 to %d)", maxExtractJobs))
	return cmd
}

// maxExtractJobs bounds --jobs: past a few dozen streams a registry
// throttles rather than serves faster, and each job may hold a layer on disk.
const maxExtractJobs = 64

// extractTar writes the tar to stdout or to a file created next to its final
// name and renamed when complete, so a failure leaves no half-written file.
func extractTar(cmd *cobra.Command, ref, output string, eo imageops.ExtractOptions, opts []imageops.Option) (*imageops.ExtractResult, error) {
	if output == "" || output == "-" {
		if cli.IsTerminal(cmd.OutOrStdout()) {
			return nil, fmt.Errorf("refusing to write a tar to a terminal: use -o FILE, --dir DIR, or a pipe")
		}
		return imageops.Extract(cmd.Context(), ref, cmd.OutOrStdout(), eo, opts...)
	}
	eo.TempDir = filepath.Dir(output) // layers downloaded ahead wait on the output's disk
	tmp, err := os.CreateTemp(filepath.Dir(output), "."+filepath.Base(output)+".partial-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	res, err := imageops.Extract(cmd.Context(), ref, io.Writer(tmp), eo, opts...)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	return res, os.Rename(tmp.Name(), output)
}
