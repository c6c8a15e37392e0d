package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"github.com/r8im/r8im/config"
	"github.com/r8im/r8im/imageops"
	"github.com/r8im/r8im/internal/cli"
	"github.com/r8im/r8im/internal/untrusted"
	"github.com/r8im/r8im/jobs"
	"github.com/r8im/r8im/storage"
)

// errFailed makes `wait` exit non-zero after printing the reason.
var errFailed = errors.New("the task failed")

// unknownGrace is how long wait looks for an id that names nothing yet
// (a task about to be queued by another producer) before giving up.
const unknownGrace = 3 * time.Second

func (a *app) statusCmd() *cobra.Command {
	return a.uses(&cobra.Command{
		Use:   "status ID",
		Short: "Show the record of a task: state, result, sizes, timings, last error",
		Long: `status shows the record of a task. ID is a task id as enqueue prints it
(affix:run-42, zstd:…) or the event id of an affix (run-42).`,
		Example: "  enqueue status run-42\n  enqueue status affix:run-42 --json",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, records, closeAll, err := a.enqueuer(cmd.Context())
			if err != nil {
				return err
			}
			defer closeAll()
			id, err := e.ResolveID(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			rec, err := records.Get(cmd.Context(), id)
			if err != nil {
				return fmt.Errorf("%s: %w (the task is queued; its record is written when it starts)", id, err)
			}
			if a.json {
				return cli.PrintJSON(cmd.OutOrStdout(), printable(rec))
			}
			printRecord(cmd.OutOrStdout(), printable(rec))
			return nil
		},
	}, config.SectionRedis)
}

func (a *app) waitCmd() *cobra.Command {
	return a.uses(&cobra.Command{
		Use:   "wait ID",
		Short: "Follow a task until it ends; print the image, exit non-zero if it failed",
		Long: `wait follows a task until it ends. ID is a task id as enqueue prints it
(affix:run-42, zstd:…) or the event id of an affix (run-42). An id that names
no task and no record is an error after a few seconds.`,
		Example: "  enqueue wait run-42 && echo published",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, records, closeAll, err := a.enqueuer(cmd.Context())
			if err != nil {
				return err
			}
			defer closeAll()
			id, err := resolveWithin(cmd.Context(), e, args[0], unknownGrace)
			if err != nil {
				return err
			}
			return a.follow(cmd, records, id)
		},
	}, config.SectionRedis)
}

// resolveWithin resolves id, looking again every half second for up to
// grace while it names nothing.
func resolveWithin(ctx context.Context, e *jobs.Enqueuer, id string, grace time.Duration) (string, error) {
	giveUp := time.After(grace)
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		tid, err := e.ResolveID(ctx, id)
		if !errors.Is(err, jobs.ErrUnknownID) {
			return tid, err
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-giveUp:
			return "", fmt.Errorf("%w (looked for %s)", err, grace)
		case <-tick.C:
		}
	}
}

// follow polls the record, shows progress on stderr, and prints the result.
func (a *app) follow(cmd *cobra.Command, records *storage.Records, id string) error {
	progress := cli.NewProgress(cmd.ErrOrStderr(), a.json || a.quiet)
	defer progress.Done()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		rec, err := records.Get(cmd.Context(), id)
		switch {
		case errors.Is(err, storage.ErrNoRecord):
			// Not written yet (just enqueued): keep waiting.
		case err != nil:
			return err
		case rec.State == storage.StateSucceeded:
			progress.Done()
			if a.json {
				return cli.PrintJSON(cmd.OutOrStdout(), printable(rec))
			}
			fmt.Fprintln(cmd.OutOrStdout(), rec.Result)
			return nil
		case rec.State == storage.StateFailed:
			progress.Done()
			rec = printable(rec)
			if a.json {
				_ = cli.PrintJSON(cmd.OutOrStdout(), rec)
			}
			return fmt.Errorf("%w: %s: %s (after %d attempt(s); `enqueue retry %s` once fixed)", errFailed, id, rec.LastError, rec.Attempts, id)
		case rec.State == storage.StateRunning:
			progress.Report(imageops.Progress{Stage: "running", Done: rec.ProgressDone, Total: rec.ProgressTotal})
		}
		select {
		case <-cmd.Context().Done():
			return cmd.Context().Err()
		case <-tick.C:
		}
	}
}

// recordStates are the states of records, which list takes besides
// asynq's task states (jobs.TaskStates).
var recordStates = []storage.State{storage.StateQueued, storage.StateRunning, storage.StateSucceeded, storage.StateFailed}

func (a *app) listCmd() *cobra.Command {
	var (
		state string
		queue string
		limit int
	)
	cmd := &cobra.Command{
		Use:   "list [--state STATE] [--queue Q]",
		Short: "List task records, newest first",
		Long: `list shows task records, newest first. --state takes a record's state
(queued, running, succeeded, failed) or, as asynqmon shows tasks, an asynq
task state (pending, active, scheduled, retry, archived, completed): then
the tasks asynq holds in that state are listed with their records.`,
		Example: "  enqueue list --state failed --queue publish\n  enqueue list --state archived",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			e, records, closeAll, err := a.enqueuer(cmd.Context())
			if err != nil {
				return err
			}
			defer closeAll()
			var recs []storage.Record
			switch {
			case slices.Contains(jobs.TaskStates, state):
				ids, err := e.TaskIDs(state, queue, limit)
				if err != nil {
					return err
				}
				for _, id := range ids {
					rec, err := records.Get(cmd.Context(), id)
					switch {
					case errors.Is(err, storage.ErrNoRecord):
						rec = &storage.Record{ID: id, Queue: queue, State: storage.State(state)}
					case err != nil:
						return err
					}
					recs = append(recs, *rec)
				}
			case state == "" || slices.Contains(recordStates, storage.State(state)):
				states := recordStates
				if state != "" {
					states = []storage.State{storage.State(state)}
				}
				for _, st := range states {
					rs, err := records.List(cmd.Context(), st, limit)
					if err != nil {
						return err
					}
					for _, r := range rs {
						if queue == "" || r.Queue == queue {
							recs = append(recs, r)
						}
					}
				}
			default:
				return fmt.Errorf("--state %q: use a record state (queued, running, succeeded, failed) or an asynq task state (%s)", state, strings.Join(jobs.TaskStates, ", "))
			}
			if a.json {
				return cli.PrintJSON(cmd.OutOrStdout(), printableAll(recs))
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tTYPE\tQUEUE\tSTATE\tUPDATED\tRESULT / ERROR")
			for _, r := range printableAll(recs) {
				detail := r.Result
				if r.State == storage.StateFailed || detail == "" {
					detail = r.LastError
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Type, r.Queue, r.State, humanize.Time(r.UpdatedAt), detail)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&state, "state", "", "only records in this state (queued, running, succeeded, failed) or tasks in this asynq state (pending, active, scheduled, retry, archived, completed)")
	cmd.Flags().StringVar(&queue, "queue", "", "only tasks of this queue")
	cmd.Flags().IntVar(&limit, "limit", 100, "at most this many per state")
	return a.uses(cmd, config.SectionRedis)
}

func (a *app) retryCmd() *cobra.Command {
	return a.taskCmd("retry", "Run a failed (archived or cancelled) task again", "requeued", (*jobs.Enqueuer).Retry)
}

func (a *app) cancelCmd() *cobra.Command {
	return a.taskCmd("cancel", "Cancel a task for good: archive it if waiting, stop it if running (retry runs it again)", "cancelled", (*jobs.Enqueuer).Cancel)
}

// taskCmd is a command that does one thing to one task.
func (a *app) taskCmd(verb, short, done string, do func(*jobs.Enqueuer, context.Context, string) error) *cobra.Command {
	return a.uses(&cobra.Command{
		Use:     verb + " ID",
		Short:   short,
		Long:    verb + " takes a task id as enqueue prints it (affix:run-42, zstd:…) or the event id of an affix (run-42).",
		Example: "  enqueue " + verb + " run-42\n  enqueue " + verb + " affix:run-42",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, _, closeAll, err := a.enqueuer(cmd.Context())
			if err != nil {
				return err
			}
			defer closeAll()
			id, err := e.ResolveID(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if err := do(e, cmd.Context(), id); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "%s %s\n", done, id)
			return nil
		},
	}, config.SectionRedis, config.SectionRecords)
}

// maxPrintedLayers bounds the weights layers printRecord lists.
const maxPrintedLayers = 50

func printRecord(w io.Writer, r *storage.Record) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s\t%s\n", k, v)
		}
	}
	row("id", r.ID)
	row("type", r.Type)
	row("queue", r.Queue)
	row("event", r.EventID)
	row("state", string(r.State))
	row("result", r.Result)
	row("base", r.BaseDigest)
	if len(r.Layers) <= 1 {
		row("layer", r.LayerDigest)
		if r.LayerSize > 0 {
			row("layer size", humanize.IBytes(uint64(r.LayerSize)))
		}
	}
	for i, l := range r.Layers {
		if i == maxPrintedLayers {
			row("layers", fmt.Sprintf("… and %d more (enqueue status --json lists them all)", len(r.Layers)-i))
			break
		}
		if len(r.Layers) > 1 {
			row(fmt.Sprintf("layer %d", i+1), fmt.Sprintf("%s  %s  %d files  %s", l.Digest, humanize.IBytes(uint64(max(l.Size, 0))), l.Files, l.Source))
		} else if l.Source != "" {
			row("layer source", l.Source)
		}
	}
	if r.DownloadedBytes > 0 {
		row("read", humanize.IBytes(uint64(r.DownloadedBytes)))
	}
	if r.State == storage.StateRunning && r.ProgressTotal > 0 {
		row("progress", fmt.Sprintf("%s / %s", humanize.IBytes(uint64(r.ProgressDone)), humanize.IBytes(uint64(r.ProgressTotal))))
	}
	row("attempts", fmt.Sprint(r.Attempts))
	row("last error", r.LastError)
	for _, n := range r.Notes {
		row("note", untrusted.Text(n, maxPrintedError))
	}
	row("updated", r.UpdatedAt.Format(time.RFC3339))
	_ = tw.Flush()
}
