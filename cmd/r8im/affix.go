package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/r8im/r8im/imageops"
	"github.com/r8im/r8im/internal/cli"
)

func newAffixCmd(g *globals) *cobra.Command {
	var (
		req         imageops.AffixRequest
		tarPath     string
		dirPath     string
		compression string
		created     string
	)
	cmd := &cobra.Command{
		Use:   "affix --base REF --dest REPO[:TAG] (--tar PATH|- | --dir DIR)",
		Short: "Add a weights tarball as a new layer on top of a base image",
		Long: `affix streams a weights tarball (.tar, .tar.gz or .tar.zst, detected by its
first bytes), or a directory (--dir, read in path order as if tarred), once: its entries are placed under --target, checked, compressed,
hashed and uploaded in one pass. The base's layers are never downloaded: the
destination repository gets them by cross-repository mount (or already has
them). The new image is pushed, re-read by digest and checked blob by blob.

Entries must all lie under the target (src/weights/... style) or all be
relative (placed under the target). Escaping paths, links leaving the target,
devices, fifos and whiteouts are refused, as is anything outside the target
(a stray src/predict.py breaks the model) unless --allow-outside-target.

The same tarball and --created always give the same digests.`,
		Example: `  r8im affix --base r8.im/acme/sdxl@sha256:d0b0… --dest r8.im/acme/sdxl-ft --tar weights.tar
  tar -C out -c . | r8im affix --base localhost:5000/base:v1 --dest localhost:5000/ft:v2 --tar - --compression zstd
  r8im affix --base base:v1 --dest ft --tar w.tar.gz --platform all --json
  r8im affix --base r8.im/acme/sdxl:v1 --dest r8.im/acme/sdxl-ft --dir ./output/weights`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts, progress, err := g.options(cmd)
			if err != nil {
				return err
			}
			defer progress.Done()
			c, err := imageops.ParseCompression(compression)
			if err != nil {
				return err
			}
			req.Compression = c
			if cmd.Flags().Changed("level") && req.Level == 0 {
				return fmt.Errorf("--level 0 is not a level; leave --level out for the default, or use --compression none for no compression")
			}
			if req.Created, err = cli.CreatedTime(created); err != nil {
				return err
			}
			switch {
			case tarPath != "" && dirPath != "":
				return fmt.Errorf("--tar and --dir both given: publish one weights input, a tarball (--tar) or a directory (--dir)")
			case dirPath != "":
				st, err := os.Stat(dirPath)
				if err != nil {
					return fmt.Errorf("--dir %s: %w", dirPath, err)
				}
				if !st.IsDir() {
					return fmt.Errorf("--dir %s is not a directory; give a tarball with --tar instead", dirPath)
				}
				if err := dirWeights(&req, dirPath); err != nil {
					return fmt.Errorf("--dir %s: %w", dirPath, err)
				}
			}
			switch tarPath {
			case "":
				if dirPath == "" {
					return fmt.Errorf("give the weights: --tar PATH (a tarball, or - for stdin) or --dir DIR (a directory)")
				}
			case "-":
				req.Weights = imageops.OnceOpener(cmd.InOrStdin())
			default:
				st, err := os.Stat(tarPath)
				if err != nil {
					return fmt.Errorf("--tar %s: %w", tarPath, err)
				}
				if st.IsDir() {
					return fmt.Errorf("--tar %s is a directory; publish it with --dir %s (or make a tarball: tar -C %s -cf weights.tar .)", tarPath, tarPath, tarPath)
				}
				opts = append(opts, fileWeights(&req, tarPath, st))
			}
			res, err := imageops.Affix(cmd.Context(), req, opts...)
			progress.Done()
			if err != nil {
				return err
			}
			return g.printResult(cmd, res, res.Ref, res.Stages, res.Transfer.Notes...)
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Base, "base", "", "base image, by tag or digest (required)")
	f.StringVar(&req.Dest, "dest", "", "destination repository and optional tag, host/repo[:tag] (required)")
	f.StringVar(&tarPath, "tar", "", "weights tarball (.tar, .tar.gz, .tar.zst), or - for stdin (or --dir)")
	f.StringVar(&dirPath, "dir", "", "weights directory, published as if tarred in path order (or --tar)")
	f.StringVar(&req.Target, "target", imageops.DefaultTarget, "directory in the image where the weights go")
	f.StringVar(&compression, "compression", "gzip", "layer compression: gzip, zstd or none (zstd makes the image OCI)")
	f.IntVar(&req.Level, "level", 0, "compression level (default: gzip 1, zstd 3)")
	f.StringVar(&created, "created", "", "creation time, RFC 3339 (default: $SOURCE_DATE_EPOCH if set, else now)")
	f.BoolVar(&req.AllowOutsideTarget, "allow-outside-target", false, "keep tarball entries outside --target instead of refusing them (the first entry must be under the target)")
	for _, name := range []string{"base", "dest"} {
		_ = cmd.MarkFlagRequired(name)
	}
	return cmd
}

// fileWeights makes the tarball at path (st its FileInfo) req's weights,
// read again on every retry, and returns the option that keeps its upload
// sessions, keyed by everything that identifies the job, so that the same
// command run again resumes.
func fileWeights(req *imageops.AffixRequest, path string, st os.FileInfo) imageops.Option {
	req.WeightsSize = st.Size()
	req.Weights = func() (io.ReadCloser, error) { return os.Open(path) }
	abs, _ := filepath.Abs(path)
	return resumable("affix", req.Base, req.Dest, abs, fileIdentity(st),
		string(req.Compression), strconv.Itoa(req.Level), req.Target)
}

// dirWeights makes the directory dir req's weights. No resumable session: a
// directory has no cheap identity, and a changed tree must not resume an
// old upload (the hash check would refuse it anyway, after re-reading).
func dirWeights(req *imageops.AffixRequest, dir string) (err error) {
	if req.WeightsSize, err = imageops.DirSize(dir); err != nil {
		return err
	}
	req.Weights = imageops.DirOpener(dir)
	return nil
}
