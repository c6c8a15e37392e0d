package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/dustin/go-humanize"
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
		layout      string
		created     string
		jobs        int
	)
	cmd := &cobra.Command{
		Use:   "affix --base REF --dest REPO[:TAG] (--tar PATH|- | --dir DIR)",
		Short: "Add weights (a tarball or a directory) as new layers on top of a base image",
		Long: `affix publishes weights onto a base image: a directory (--dir, read in path
order as if tarred) or a tarball (--tar: .tar, .tar.gz or .tar.zst, detected by
its first bytes). Entries are placed under --target, checked, compressed, hashed
and uploaded in one pass, with no temp file. The base's layers are never
downloaded: the destination repository gets them by cross-repository mount (or
already has them). The new image is pushed, re-read by digest and checked blob
by blob.

Layers (--layers): auto (the default) gives each file of 64 MiB or more a layer
of its own, uncompressed (weights do not compress; such a layer pulls without
CPU), and bundles the smaller files, directories and links, gzipped, into layers
of at most 256 MiB; per-file gives every file its own layer; single makes one
layer. A directory or an uncompressed .tar is read at random: --jobs layers are
read and uploaded at once. A .tar.gz, .tar.zst or stdin can only be read in
order and gives one layer. Layers whose digests r8im remembers (under the user
cache directory, keyed by path, size, mtime and inode) and that the registry
already holds are neither read nor sent again.

Entries must all lie under the target (src/weights/... style) or all be
relative (placed under the target). Escaping paths, links leaving the target,
devices, fifos and whiteouts are refused, as is anything outside the target
(a stray src/predict.py breaks the model) unless --allow-outside-target.

The same weights and options always give the same layers, whatever --jobs;
with the same --created, the same image digest.`,
		Example: `  r8im affix --base r8.im/acme/sdxl@sha256:d0b0… --dest r8.im/acme/sdxl-ft --tar weights.tar
  tar -C out -c . | r8im affix --base localhost:5000/base:v1 --dest localhost:5000/ft:v2 --tar - --compression zstd
  r8im affix --base base:v1 --dest ft --tar w.tar.gz --platform all --json
  r8im affix --base r8.im/acme/sdxl:v1 --dest r8.im/acme/sdxl-ft --dir ./output/weights
  r8im affix --base r8.im/acme/llm:v1 --dest r8.im/acme/llm-ft --dir ./shards --layers per-file --jobs 8`,
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
			if req.Layout, err = imageops.ParseLayout(layout); err != nil {
				return fmt.Errorf("--layers: %w", err)
			}
			if jobs < 1 || jobs > 64 {
				return fmt.Errorf("--jobs %d: give 1 to 64 layers at once", jobs)
			}
			opts = append(opts, imageops.WithJobs(jobs), layerDigests())
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
				opts = append(opts, resumable("affix", req.Base, req.Dest, absPath(dirPath), "dir",
					string(req.Compression), strconv.Itoa(req.Level), req.Target, string(req.Layout)))
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
				opt, err := fileWeights(&req, tarPath, st)
				if err != nil {
					return fmt.Errorf("--tar %s: %w", tarPath, err)
				}
				opts = append(opts, opt)
			}
			res, err := imageops.Affix(cmd.Context(), req, opts...)
			progress.Done()
			if err != nil {
				return err
			}
			if !g.json && !g.quiet {
				printLayers(cmd.ErrOrStderr(), res)
			}
			return g.printResult(cmd, res, res.Ref.String(), res.Stages, res.Transfer.Notes...)
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Base, "base", "", "base image, by tag or digest (required)")
	f.StringVar(&req.Dest, "dest", "", "destination repository and optional tag, host/repo[:tag] (required)")
	f.StringVar(&tarPath, "tar", "", "weights tarball (.tar, .tar.gz, .tar.zst), or - for stdin (or --dir)")
	f.StringVar(&dirPath, "dir", "", "weights directory, published as if tarred in path order (or --tar)")
	f.StringVar(&req.Target, "target", imageops.DefaultTarget, "directory in the image where the weights go")
	f.StringVar(&layout, "layers", "auto", "weights layout: auto (a layer per file of 64 MiB or more, small files bundled), per-file or single")
	f.IntVar(&jobs, "jobs", 4, "weights layers read and uploaded at once (1-64)")
	f.StringVar(&compression, "compression", "auto", "layer compression: auto (big files' layers none, bundles gzip), gzip, zstd or none (zstd makes the image OCI)")
	f.IntVar(&req.Level, "level", 0, "compression level of the compressed layers (default: gzip 1, zstd 3)")
	f.StringVar(&created, "created", "", "creation time, RFC 3339 (default: $SOURCE_DATE_EPOCH if set, else now)")
	f.BoolVar(&req.AllowOutsideTarget, "allow-outside-target", false, "keep tarball entries outside --target instead of refusing them (the first entry must be under the target)")
	for _, name := range []string{"base", "dest"} {
		_ = cmd.MarkFlagRequired(name)
	}
	return cmd
}

// maxPrintedLayers bounds the weights layers printLayers lists.
const maxPrintedLayers = 50

// printLayers writes the weights layers of res to w, one line each (how
// each got into the registry), and what was read and sent.
func printLayers(w io.Writer, res *imageops.AffixResult) {
	count := map[string]int{}
	for i, l := range res.Layers {
		count[l.Source]++
		if i < maxPrintedLayers {
			fmt.Fprintf(w, "layer %d/%d  %s  %s  %d files  %s\n", i+1, len(res.Layers), l.Digest, humanize.IBytes(uint64(max(l.Size, 0))), l.Files, l.Source)
		} else if i == maxPrintedLayers {
			fmt.Fprintf(w, "… %d more layers (--json lists them all)\n", len(res.Layers)-i)
		}
	}
	var parts []string
	for _, src := range []string{imageops.LayerUploaded, imageops.LayerFound, imageops.LayerMounted} {
		if count[src] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", count[src], src))
		}
	}
	fmt.Fprintf(w, "weights: %d layers (%s); read %s, sent %s\n", len(res.Layers), strings.Join(parts, ", "),
		humanize.IBytes(uint64(max(res.ReadBytes, 0))), humanize.IBytes(uint64(max(res.Transfer.UploadedBytes, 0))))
}

// fileWeights makes the tarball at path (st its FileInfo) req's weights,
// read again on every retry: an uncompressed tarball as a tree (indexed,
// its members read at their offsets), a compressed one as a stream. It
// returns the option that keeps its upload sessions, keyed by everything
// that identifies the job, so that the same command run again resumes.
func fileWeights(req *imageops.AffixRequest, path string, st os.FileInfo) (imageops.Option, error) {
	req.WeightsSize = st.Size()
	req.Weights = func() (io.ReadCloser, error) { return os.Open(path) }
	tree, err := imageops.TarFileTree(path)
	switch {
	case err == nil:
		req.Tree = tree
	case !errors.Is(err, imageops.ErrNotIndexable):
		return nil, err
	}
	return resumable("affix", req.Base, req.Dest, absPath(path), fileIdentity(st),
		string(req.Compression), strconv.Itoa(req.Level), req.Target, string(req.Layout)), nil
}

func absPath(p string) string {
	abs, _ := filepath.Abs(p)
	return abs
}

// dirWeights makes the directory dir req's weights, as a tree. Its upload
// sessions are kept like a tarball's: a file that changed since the
// interrupted upload fails the resume's hash check, and that layer is sent
// from the start.
func dirWeights(req *imageops.AffixRequest, dir string) (err error) {
	if req.WeightsSize, err = imageops.DirSize(dir); err != nil {
		return err
	}
	req.Tree = imageops.DirTree(dir)
	req.Weights = imageops.DirOpener(dir)
	return nil
}
