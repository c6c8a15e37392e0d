package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/spf13/cobra"

	"github.com/r8im/r8im/config"
	"github.com/r8im/r8im/imageops"
	"github.com/r8im/r8im/internal/cli"
	"github.com/r8im/r8im/jobs"
	"github.com/r8im/r8im/storage"
)

func (a *app) backfillCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "backfill",
		Short: "Queue batch work over many images",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(a.backfillZstdCmd())
	return cmd
}

// imageSources are where a backfill's images come from.
type imageSources struct {
	images   string
	repos    []string
	registry string
	match    []string
}

func (a *app) backfillZstdCmd() *cobra.Command {
	var (
		src      imageSources
		req      jobs.BackfillRequest
		rateFlag float64
		jobsFlag int
	)
	cmd := &cobra.Command{
		Use:   "zstd (--images FILE|- | --repo REPO... | --registry HOST) [flags]",
		Short: "Recompress many images to zstd: resolve, skip those already zstd, queue the rest as one batch",
		Long: `backfill zstd queues an image:zstd task on the backfill queue for every
image that is not already zstd, as one batch (see "enqueue batch status").

Images come from --images (a file, or - for stdin: one full reference a line,
# comments allowed), --repo (every tag of a repository; repeatable) or
--registry (every tag of every repository in the registry's catalog).
--match keeps only matching images: a pattern without ':' is matched against
the tag (v*), one with ':' against repository:tag without the host
(acme/*:v*). Patterns use shell globbing (path.Match); repeat to allow more.

Results go, by default, to the same repository under <tag>-zstd (a source
named by digest is pushed by digest). --in-place moves the source tag itself
to the recompressed image (the old digest stays in the registry and in the
task's record as base_digest); --dest-repo-suffix writes <repo><suffix>:<tag>.

Task ids depend on the source digest, the destination and the options, not on
the batch, so running the same backfill again queues nothing new. Layers shared
by many images are recompressed once: workers record each conversion in Redis
and later tasks mount it. --dry-run lists what would be queued and the bytes to
recompress, and records nothing.`,
		Example: `  enqueue backfill zstd --repo r8.im/acme/llama --match 'v*' --dry-run
  enqueue backfill zstd --registry localhost:5000 --rate 20 --callback-url https://hooks.example.com/r8im
  crane ls r8.im/acme/llama | sed 's|^|r8.im/acme/llama:|' | enqueue backfill zstd --images - --in-place
  enqueue batch status zstd-20261124T101500Z-3f9a`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			opts, err := cli.ImageOptions(a.cfg.Registry)
			if err != nil {
				return err
			}
			images, err := src.list(ctx, cmd.InOrStdin(), opts)
			if err != nil {
				return err
			}
			if len(images) == 0 {
				return errors.New("no images to backfill: check --images, --repo, --registry and --match")
			}
			if req.BatchID == "" {
				req.BatchID = newBatchID()
			}
			req.Images = images
			req.Description = "backfill zstd of " + src.describe(len(images))
			e, records, closeAll, err := a.enqueuer(ctx)
			if err != nil {
				return err
			}
			defer closeAll()
			prog := newBackfillProgress(cmd.ErrOrStderr(), a.quiet || a.json)
			b := &jobs.Backfill{Enqueuer: e, Batches: storage.NewBatches(records, a.cfg.RecordTTL), Options: opts,
				Rate: rateFlag, Jobs: jobsFlag, Progress: prog.report}
			sum, err := b.Run(ctx, req)
			prog.done()
			if err != nil {
				return err
			}
			if a.json {
				if err := cli.PrintJSON(cmd.OutOrStdout(), sum); err != nil {
					return err
				}
			} else {
				printBackfill(cmd.OutOrStdout(), cmd.ErrOrStderr(), sum)
			}
			if sum.Failed > 0 {
				return fmt.Errorf("%d of %d images could not be queued (see their reasons above)", sum.Failed, len(sum.Items))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&src.images, "images", "", "file of image references, one a line (- for stdin)")
	f.StringArrayVar(&src.repos, "repo", nil, "every tag of this repository (host/repo; repeatable)")
	f.StringVar(&src.registry, "registry", "", "every tag of every repository of this registry (its catalog)")
	f.StringArrayVar(&src.match, "match", nil, "keep images whose tag (or repo:tag, when the pattern has ':') matches this glob; repeatable")
	f.StringVar(&req.TagSuffix, "tag-suffix", jobs.DefaultTagSuffix, "the result's tag is the source tag and this suffix")
	f.BoolVar(&req.InPlace, "in-place", false, "move the source tag to the recompressed image (the old digest is kept in the record)")
	f.StringVar(&req.RepoSuffix, "dest-repo-suffix", "", "push to <repo><suffix>:<tag> instead of the source repository")
	f.IntVar(&req.Level, "level", 0, "zstd level 1-22 (default 3)")
	f.Int64Var(&req.MinSize, "min-size", 0, "keep layers smaller than this many compressed bytes as they are")
	f.StringVar(&req.Platform, "platform", "all", "platform of multi-platform images to recompress: os/arch, or all")
	f.Float64Var(&rateFlag, "rate", 0, "at most this many tasks queued a second (0: no limit)")
	f.IntVar(&jobsFlag, "jobs", 8, "images resolved at once")
	f.StringVar(&req.BatchID, "batch-id", "", "id of the batch (default zstd-<UTC time>-<random>)")
	f.StringVar(&req.CallbackURL, "callback-url", "", "POST the batch status here, signed, when every task has ended")
	f.BoolVar(&req.DryRun, "dry-run", false, "list what would be queued, with the bytes to recompress; queue nothing")
	cmd.MarkFlagsMutuallyExclusive("in-place", "dest-repo-suffix")
	cmd.MarkFlagsOneRequired("images", "repo", "registry")
	return a.uses(cmd, config.SectionRedis, config.SectionRegistry, config.SectionTasks, config.SectionRecords)
}

func newBatchID() string {
	b := make([]byte, 2)
	_, _ = rand.Read(b)
	return "zstd-" + time.Now().UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b)
}

// list gathers the images, filtered by --match.
func (s *imageSources) list(ctx context.Context, stdin io.Reader, opts []imageops.Option) ([]string, error) {
	var refs []string
	if s.images != "" {
		r := stdin
		if s.images != "-" {
			f, err := os.Open(s.images)
			if err != nil {
				return nil, fmt.Errorf("reading --images: %w", err)
			}
			defer f.Close()
			r = f
		}
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if line := strings.TrimSpace(sc.Text()); line != "" && !strings.HasPrefix(line, "#") {
				refs = append(refs, line)
			}
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("reading --images: %w", err)
		}
	}
	repos := s.repos
	if s.registry != "" {
		all, err := imageops.Catalog(ctx, s.registry, opts...)
		if err != nil {
			return nil, err
		}
		repos = append(repos, all...)
	}
	for _, repo := range repos {
		tags, err := imageops.ListTags(ctx, repo, opts...)
		if err != nil {
			return nil, err
		}
		for _, t := range tags {
			refs = append(refs, repo+":"+t)
		}
	}
	for _, p := range s.match {
		if _, err := path.Match(p, ""); err != nil {
			return nil, fmt.Errorf("--match %q is not a valid glob: %w", p, err)
		}
	}
	seen := map[string]bool{}
	var out []string
	for _, r := range refs {
		if !seen[r] && s.matches(r) {
			seen[r] = true
			out = append(out, r)
		}
	}
	return out, nil
}

// matches applies --match to one reference (no patterns: everything).
func (s *imageSources) matches(ref string) bool {
	if len(s.match) == 0 {
		return true
	}
	var repo, tag string
	if r, err := name.ParseReference(ref, name.WeakValidation); err == nil {
		repo = r.Context().RepositoryStr()
		if t, ok := r.(name.Tag); ok {
			tag = t.TagStr()
		}
	}
	for _, p := range s.match {
		subject := tag
		if strings.Contains(p, ":") {
			subject = repo + ":" + tag
		}
		if ok, _ := path.Match(p, subject); ok {
			return true
		}
	}
	return false
}

func (s *imageSources) describe(n int) string {
	var from []string
	if s.images != "" {
		from = append(from, "--images "+s.images)
	}
	for _, r := range s.repos {
		from = append(from, "--repo "+r)
	}
	if s.registry != "" {
		from = append(from, "--registry "+s.registry)
	}
	for _, m := range s.match {
		from = append(from, "--match "+m)
	}
	return fmt.Sprintf("%d images (%s)", n, strings.Join(from, " "))
}

func printBackfill(out, errOut io.Writer, s *jobs.BackfillSummary) {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "IMAGE\tACTION\tDEST\tTO RECOMPRESS\tREASON")
	for _, it := range s.Items {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", it.Image, it.Action, it.Dest, humanize.IBytes(uint64(it.ConvertBytes)), it.Reason)
	}
	tw.Flush()
	verb := "queued"
	if s.DryRun {
		verb = "would queue"
	}
	fmt.Fprintf(errOut, "batch %s: %s %d (%s to recompress), %d already queued or done, %d skipped, %d failed\n",
		s.BatchID, verb, s.Enqueued, humanize.IBytes(uint64(s.ConvertBytes)), s.Existing, s.Skipped, s.Failed)
	if !s.DryRun {
		fmt.Fprintf(errOut, "follow it with: enqueue batch status %s\n", s.BatchID)
	}
}

// backfillProgress shows images decided so far: a line redrawn on a
// terminal, a line every 10 seconds otherwise.
type backfillProgress struct {
	mu     sync.Mutex
	w      io.Writer
	off    bool
	tty    bool
	last   time.Time
	counts map[string]int
}

func newBackfillProgress(w io.Writer, quiet bool) *backfillProgress {
	return &backfillProgress{w: w, off: quiet, tty: cli.IsTerminal(w), counts: map[string]int{}, last: time.Now()}
}

func (p *backfillProgress) report(done, total int, item jobs.BackfillItem) {
	if p.off {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.counts[item.Action]++
	if !p.tty && time.Since(p.last) < 10*time.Second && done != total {
		return
	}
	p.last = time.Now()
	line := fmt.Sprintf("images %d/%d: %d queued, %d existing, %d skipped, %d failed", done, total,
		p.counts[jobs.ActionEnqueued]+p.counts[jobs.ActionPlanned], p.counts[jobs.ActionExisting],
		p.counts[jobs.ActionSkipped], p.counts[jobs.ActionFailed])
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", line)
	} else {
		fmt.Fprintln(p.w, line)
	}
}

func (p *backfillProgress) done() {
	if !p.off && p.tty {
		fmt.Fprintln(p.w)
	}
}

func (a *app) batchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "batch",
		Short: "Follow backfill batches",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(a.uses(&cobra.Command{
		Use:   "status ID",
		Short: "Show a batch: its tasks by state, images skipped, bytes saved",
		Example: `  enqueue batch status zstd-20261124T101500Z-3f9a
  enqueue batch status zstd-20261124T101500Z-3f9a --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rdb, records, err := a.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer rdb.Close()
			st, err := storage.NewBatches(records, a.cfg.RecordTTL).Status(cmd.Context(), args[0])
			if errors.Is(err, storage.ErrNoBatch) {
				return fmt.Errorf("no batch %q in this Redis: check the id printed by enqueue backfill (batches expire after R8IM_RECORD_TTL)", args[0])
			}
			if err != nil {
				return err
			}
			if a.json {
				return cli.PrintJSON(cmd.OutOrStdout(), st)
			}
			state := "running"
			switch {
			case st.CompletedAt != nil:
				state = "completed " + st.CompletedAt.Format(time.RFC3339)
			case !st.Sealed:
				state = "being queued"
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "batch      %s (%s)\n", st.ID, state)
			if st.Description != "" {
				fmt.Fprintf(w, "what       %s\n", st.Description)
			}
			fmt.Fprintf(w, "total      %d\npending    %d\nrunning    %d\nsucceeded  %d\nfailed     %d\nskipped    %d\nsaved      %s\n",
				st.Total, st.Pending, st.Running, st.Succeeded, st.Failed, st.Skipped, humanize.IBytes(uint64(max(st.SavedBytes, 0))))
			if st.Failed > 0 {
				fmt.Fprintln(w, "(enqueue list --state failed shows why; enqueue retry ID queues one again)")
			}
			return nil
		},
	}, config.SectionRedis))
	return cmd
}
