// Command worker runs r8im's asynq task handlers: it fetches weights, affixes,
// remixes or recompresses images, pushes them and records the results.
package main

import (
	"errors"
	"os"

	"github.com/spf13/cobra"

	"github.com/r8im/r8im/config"
	"github.com/r8im/r8im/internal/cli"
)

func main() { cli.Main(newRoot(os.LookupEnv)) }

// errNoHandlers is returned until the publishing pipeline exists; the worker
// refuses to start rather than consume tasks it cannot process.
var errNoHandlers = errors.New("this build has no task handlers yet (they arrive with the publishing pipeline), so the worker will not consume tasks; `worker config` checks the configuration")

func newRoot(lookup config.LookupFunc) *cobra.Command {
	cfg := config.NewWorker()
	root := cli.Root("worker",
		"Process r8im publishing tasks from Redis",
		`worker serves r8im's asynq queues (publish > ops > backfill): it fetches
weights tarballs from S3, affixes them onto base images (or remixes and
recompresses images), pushes to the registry and records each result in Redis.

Every flag can also be set by the environment variable named in its help.`,
		"  REDIS_URL=redis://127.0.0.1:6379/0 worker --concurrency 8\n  worker config")
	cfg.RegisterFlags(root.PersistentFlags())
	root.PersistentPreRunE = cli.LoadConfig(cfg, lookup)
	root.RunE = func(*cobra.Command, []string) error { return errNoHandlers }
	root.AddCommand(cli.ConfigCommand("worker", cfg))
	return root
}
