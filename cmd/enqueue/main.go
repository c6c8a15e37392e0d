// Command enqueue is the producer side of r8im: the operator CLI that queues
// publishing work and follows it, and the receiver of training events.
package main

import (
	"context"
	"os"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/r8im/r8im/config"
	"github.com/r8im/r8im/internal/cli"
	"github.com/r8im/r8im/jobs"
	"github.com/r8im/r8im/storage"
)

func main() { cli.Main(newRoot(os.LookupEnv)) }

// app is what the subcommands share once the configuration is loaded.
type app struct {
	cfg   *config.Enqueue
	json  bool
	quiet bool // no progress on stderr
}

func newRoot(lookup config.LookupFunc) *cobra.Command {
	a := &app{cfg: config.NewEnqueue()}
	root := cli.Root("enqueue",
		"Queue r8im publishing work and follow it",
		`enqueue puts affix, remix and zstd tasks on r8im's Redis queues for the
workers, and reports on them. Tasks have stable ids: enqueueing the same work
again reports the existing task ("already queued" or "already done") instead
of adding a second one.

Each command shows the flags it uses; every such flag can also be set by
the environment variable named in its help. Commands that take an ID accept
a task id (affix:run-42, as enqueue prints it) or an affix's event id (run-42).`,
		`  enqueue affix --base r8.im/acme/base@sha256:… --weights s3://runs/42/weights.tar --dest r8.im/acme/ft:42 --event-id run-42 --wait
  enqueue status run-42
  enqueue list --state failed`)
	root.PersistentFlags().BoolVar(&a.json, "json", false, "print results as JSON")
	root.PersistentFlags().BoolVarP(&a.quiet, "quiet", "q", false, "no progress on stderr (results and errors still print)")
	root.PersistentPreRunE = cli.LoadConfig(a.cfg, lookup)
	configCmd := cli.ConfigCommand("enqueue", a.cfg)
	a.cfg.RegisterFlags(configCmd.Flags())
	root.AddCommand(configCmd,
		a.affixCmd(), a.remixCmd(), a.zstdCmd(),
		a.statusCmd(), a.waitCmd(), a.listCmd(), a.retryCmd(), a.cancelCmd(), a.serveCmd(),
		a.backfillCmd(), a.batchCmd())
	cli.AddHints(root)
	return root
}

// uses registers on cmd the flags of the configuration sections it uses
// (every setting is still read from the environment).
func (a *app) uses(cmd *cobra.Command, sections ...config.Section) *cobra.Command {
	a.cfg.RegisterSections(cmd.Flags(), sections...)
	return cmd
}

// connect opens Redis (checking that it answers) and the record store.
func (a *app) connect(ctx context.Context) (redis.UniversalClient, *storage.Records, error) {
	rdb, err := cli.ConnectRedis(ctx, a.cfg.Redis)
	if err != nil {
		return nil, nil, err
	}
	return rdb, storage.NewRecords(rdb, a.cfg.RecordTTL), nil
}

// enqueuer opens everything a submitting command needs.
func (a *app) enqueuer(ctx context.Context) (*jobs.Enqueuer, *storage.Records, func(), error) {
	rdb, records, err := a.connect(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	e := jobs.NewEnqueuer(rdb, records, a.cfg.Tasks)
	return e, records, func() { e.Close(); rdb.Close() }, nil
}
