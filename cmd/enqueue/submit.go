package main

import (
	"fmt"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"github.com/r8im/r8im/config"
	"github.com/r8im/r8im/imageops"
	"github.com/r8im/r8im/internal/cli"
	"github.com/r8im/r8im/jobs/task"
)

// submitFlags are the flags every submitting command shares.
type submitFlags struct {
	queue string
	wait  bool
}

func (s *submitFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&s.queue, "queue", task.QueueOps, "queue: publish, ops or backfill")
	cmd.Flags().BoolVar(&s.wait, "wait", false, "follow the task until it ends; print the image, exit non-zero if it failed")
}

// submit enqueues, prints the outcome, and follows the task with --wait.
func (a *app) submit(cmd *cobra.Command, s submitFlags, p task.Payload, eventID string, incidental ...string) error {
	e, records, closeAll, err := a.enqueuer(cmd.Context())
	if err != nil {
		return err
	}
	defer closeAll()
	res, err := e.Enqueue(cmd.Context(), task.Request{Payload: p, Queue: s.queue, EventID: eventID, Incidental: incidental})
	if err != nil {
		return err
	}
	if a.json && !s.wait {
		return cli.PrintJSON(cmd.OutOrStdout(), res)
	}
	switch {
	case res.Existing && res.State == "succeeded":
		fmt.Fprintf(cmd.ErrOrStderr(), "already done: %s\n", res.ID)
	case res.Existing:
		fmt.Fprintf(cmd.ErrOrStderr(), "already queued (%s): %s\n", res.State, res.ID)
	default:
		fmt.Fprintf(cmd.ErrOrStderr(), "queued on %s: %s\n", res.Queue, res.ID)
	}
	if !s.wait {
		fmt.Fprintln(cmd.OutOrStdout(), res.ID)
		return nil
	}
	return a.follow(cmd, records, res.ID)
}

func (a *app) affixCmd() *cobra.Command {
	var (
		p           task.AffixPayload
		s           submitFlags
		created     string
		compression string
	)
	cmd := &cobra.Command{
		Use:   "affix --base REF --weights URL --dest REPO[:TAG] [--event-id ID]",
		Short: "Queue an affix: weights from S3 (or https, file) as new layers on a base image",
		Long: `affix queues what "r8im affix" does, for a worker to run: the worker fetches
the weights (s3://bucket/key with the worker's AWS credentials, a presigned
https:// URL, or file:// on the worker's disk; a URL ending in / is every
object or file under it), affixes them and records the resulting digest.
--layers picks the layout (default: the worker's R8IM_WEIGHTS_LAYERS, auto). The task id is affix:<event id>; without --event-id one is
derived from the inputs, so running the same command twice queues it once.`,
		Example: `  enqueue affix --base r8.im/acme/base@sha256:… --weights s3://runs/42/weights.tar --dest r8.im/acme/ft:42 --wait
  enqueue affix --base localhost:5000/base:v1 --weights file:///data/w.tar --dest localhost:5000/ft --event-id run-7 --queue publish
  enqueue affix --base r8.im/acme/llm@sha256:… --weights s3://runs/42/checkpoint/ --dest r8.im/acme/llm-ft:42 --layers auto`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if compression != "" {
				c, err := imageops.ParseCompression(compression)
				if err != nil {
					return err
				}
				p.Compression = string(c)
			}
			if p.Layers != "" {
				l, err := imageops.ParseLayout(p.Layers)
				if err != nil {
					return fmt.Errorf("--layers: %w", err)
				}
				p.Layers = string(l)
			}
			t, err := cli.CreatedTime(created)
			if err != nil {
				return err
			}
			p.Created = t
			if p.EventID == "" {
				p.EventID = "op-" + task.InputsID(p.Base, p.Weights, p.Dest, p.Target, p.Compression, fmt.Sprint(p.Level), p.Platform, p.Layers)
			}
			// A time not given differs from run to run: the same command
			// twice is one task, which keeps its first time.
			var incidental []string
			if created == "" {
				incidental = append(incidental, "created")
			}
			return a.submit(cmd, s, p, p.EventID, incidental...)
		},
	}
	f := cmd.Flags()
	f.StringVar(&p.Base, "base", "", "base image with its registry host, by tag or digest (required)")
	f.StringVar(&p.Weights, "weights", "", "weights tarball URL: s3://bucket/key, https://…, file:///path (required)")
	f.StringVar(&p.Weights, "tar", "", "same as --weights (the r8im flag name)")
	_ = f.MarkHidden("tar")
	f.StringVar(&p.Dest, "dest", "", "destination host/repo[:tag] (required)")
	f.StringVar(&p.Target, "target", "", "directory in the image for the weights (default /src/weights)")
	f.StringVar(&compression, "compression", "", "auto (default: big files' layers none, bundles gzip), gzip, zstd or none")
	f.StringVar(&p.Layers, "layers", "", "weights layout: auto, per-file or single (default: the worker's)")
	f.IntVar(&p.Level, "level", 0, "compression level (default: gzip 1, zstd 3)")
	f.StringVar(&p.Platform, "platform", "", "platform of a multi-platform base (default linux/amd64), or all")
	f.StringVar(&created, "created", "", "creation time, RFC 3339 (default $SOURCE_DATE_EPOCH, else now; retries keep it)")
	f.StringVar(&p.EventID, "event-id", "", "the training event this publishes (default: derived from the inputs)")
	s.register(cmd)
	return a.uses(cmd, config.SectionRedis, config.SectionTasks, config.SectionRecords)
}

func (a *app) remixCmd() *cobra.Command {
	var (
		p       task.RemixPayload
		s       submitFlags
		created string
	)
	cmd := &cobra.Command{
		Use:     "remix --base A --weights B --dest REPO[:TAG]",
		Short:   "Queue a remix: the code of image A with the weights layers of image B",
		Example: `  enqueue remix --base r8.im/acme/sdxl:v3 --weights r8.im/acme/ft@sha256:… --dest r8.im/acme/ft:on-v3 --wait`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if created != "" {
				t, err := cli.CreatedTime(created)
				if err != nil {
					return err
				}
				p.Created = t
			}
			return a.submit(cmd, s, p, p.EventID)
		},
	}
	f := cmd.Flags()
	f.StringVar(&p.Base, "base", "", "image A, with its registry host (required)")
	f.StringVar(&p.Weights, "weights", "", "image B, with its registry host (required)")
	f.StringVar(&p.Dest, "dest", "", "destination host/repo[:tag] (required)")
	f.StringVar(&p.Platform, "platform", "", "platform (default linux/amd64), or all")
	f.StringVar(&created, "created", "", "creation time, RFC 3339 (default: B's)")
	f.StringVar(&p.EventID, "event-id", "", "an event id to keep with the record")
	s.register(cmd)
	return a.uses(cmd, config.SectionRedis, config.SectionTasks, config.SectionRecords)
}

func (a *app) zstdCmd() *cobra.Command {
	var (
		p       task.ZstdPayload
		s       submitFlags
		minSize string
	)
	cmd := &cobra.Command{
		Use:   "zstd REF --dest REPO[:TAG]",
		Short: "Queue a zstd recompression of an image",
		Long: `zstd resolves REF to its digest now (so the task id is stable and the
worker recompresses exactly this image) and queues the recompression.`,
		Example: `  enqueue zstd r8.im/acme/sdxl:v3 --dest r8.im/acme/sdxl:v3-zstd --wait`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := humanize.ParseBytes(minSize)
			if err != nil {
				return fmt.Errorf("--min-size %q: %v (try 1MiB)", minSize, err)
			}
			p.MinSize = int64(n)
			opts, err := cli.ImageOptions(a.cfg.Registry)
			if err != nil {
				return err
			}
			src, err := imageops.Resolve(cmd.Context(), args[0], opts...)
			if err != nil {
				return err
			}
			p.Source = src.String()
			if s.queue == "" {
				s.queue = task.QueueOps
			}
			return a.submit(cmd, s, p, "")
		},
	}
	f := cmd.Flags()
	f.StringVar(&p.Dest, "dest", "", "destination host/repo[:tag] (required)")
	f.IntVar(&p.Level, "level", 0, "zstd level (default 3)")
	f.StringVar(&minSize, "min-size", "1MiB", "keep layers smaller than this as they are")
	f.StringVar(&p.Platform, "platform", "", "platform (default linux/amd64), or all")
	s.register(cmd)
	return a.uses(cmd, config.SectionRedis, config.SectionRegistry, config.SectionTasks, config.SectionRecords)
}
