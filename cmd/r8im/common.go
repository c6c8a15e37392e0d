package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/r8im/r8im/config"
	"github.com/r8im/r8im/imageops"
	"github.com/r8im/r8im/internal/cli"
)

// globals are the flags every verb shares.
type globals struct {
	cfg      *config.R8im
	platform string
	json     bool
	quiet    bool
}

func (g *globals) register(root *cobra.Command) {
	pf := root.PersistentFlags()
	pf.StringVar(&g.platform, "platform", "linux/amd64", "platform to use from a multi-platform image (os/arch[/variant]), or all")
	pf.BoolVar(&g.json, "json", false, "print the result as JSON on stdout")
	pf.BoolVarP(&g.quiet, "quiet", "q", false, "no progress on stderr")
}

// options turns the configuration and flags into imageops options, with
// progress reported on stderr.
func (g *globals) options(cmd *cobra.Command) ([]imageops.Option, *cli.Progress, error) {
	p, err := imageops.ParsePlatform(g.platform)
	if err != nil {
		return nil, nil, err
	}
	opts, err := cli.ImageOptions(g.cfg.Registry)
	if err != nil {
		return nil, nil, err
	}
	nopts, err := cli.NetworkOptions(&g.cfg.Network)
	if err != nil {
		return nil, nil, err
	}
	opts = append(opts, nopts...)
	platform := imageops.WithPlatform(p)
	if cmd.Flags().Changed("platform") {
		platform = imageops.WithExactPlatform(p) // chosen: a single-platform base must have it
	}
	progress := cli.NewProgress(cmd.ErrOrStderr(), g.quiet || g.json && !cli.IsTerminal(cmd.ErrOrStderr()))
	return append(opts,
		platform,
		imageops.WithProgress(progress.Report),
		imageops.WithUserAgent("r8im/"+strings.Fields(cli.Version())[0]),
		imageops.WithTarLimits(imageops.TarLimits{MaxEntries: g.cfg.Limits.MaxTarEntries,
			MaxNameLength: g.cfg.Limits.MaxNameLength, MaxBytes: g.cfg.Limits.MaxWeightsSize}),
	), progress, nil
}

// printResult writes the JSON form, or the reference line, on stdout, and
// the stage timings and the transfer's notes (a refused chunked upload, a
// resumed one) on stderr; notes are in the JSON form's transfer.notes.
func (g *globals) printResult(cmd *cobra.Command, result any, ref string, stages []imageops.Stage, notes ...string) error {
	if g.json {
		return cli.PrintJSON(cmd.OutOrStdout(), result)
	}
	for _, n := range notes {
		fmt.Fprintln(cmd.ErrOrStderr(), "note:", n)
	}
	if !g.quiet {
		for _, s := range stages {
			fmt.Fprintf(cmd.ErrOrStderr(), "%-8s took %.2fs\n", s.Name, s.Seconds)
		}
	}
	if ref != "" {
		fmt.Fprintln(cmd.OutOrStdout(), ref)
	}
	return nil
}

// resumable keeps the uploads' sessions under the user's cache directory
// (r8im/uploads), keyed by what identifies the command's job, so that the
// same command run again after an interruption resumes its uploads instead
// of sending them again. Without a cache directory uploads still work, they
// just do not resume across runs.
func resumable(job ...string) imageops.Option {
	dir, err := os.UserCacheDir()
	if err != nil {
		return imageops.WithUploadSessions(nil, "")
	}
	return imageops.WithUploadSessions(imageops.FileSessions{Dir: filepath.Join(dir, "r8im", "uploads")}, strings.Join(job, "\x00"))
}

// layerDigests keeps the digests of the weights layers r8im produced under
// the user's cache directory (r8im/layers), so that publishing the same
// files again reads and sends nothing the registry already has.
func layerDigests() imageops.Option {
	dir, err := os.UserCacheDir()
	if err != nil {
		return imageops.WithLayerDigests(nil)
	}
	return imageops.WithLayerDigests(imageops.FileLayerDigests{Dir: filepath.Join(dir, "r8im", "layers")})
}

// fileIdentity names a file's content as far as its metadata tells: size,
// modification time and inode. A file changed in place keeps its inode but
// not its mtime; the upload's hash check catches the rest.
func fileIdentity(st os.FileInfo) string {
	id := fmt.Sprintf("%d:%d", st.Size(), st.ModTime().UnixNano())
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		id += fmt.Sprintf(":%d:%d", sys.Dev, sys.Ino)
	}
	return id
}
