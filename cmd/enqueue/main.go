// Command enqueue is the producer side of r8im: the operator CLI that queues
// publishing work and follows it, and the receiver of training events.
package main

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/r8im/r8im/config"
	"github.com/r8im/r8im/internal/cli"
)

func main() { cli.Main(newRoot(os.LookupEnv)) }

func newRoot(lookup config.LookupFunc) *cobra.Command {
	cfg := config.NewEnqueue()
	root := cli.Root("enqueue",
		"Queue r8im publishing work and follow it",
		`enqueue puts affix, remix and zstd tasks on r8im's Redis queues for the
workers, and reports on them. See the README's status table for the verbs
that are built.

Every flag can also be set by the environment variable named in its help.`,
		"  REDIS_URL=redis://127.0.0.1:6379/0 enqueue config")
	cfg.RegisterFlags(root.PersistentFlags())
	root.PersistentPreRunE = cli.LoadConfig(cfg, lookup)
	root.AddCommand(cli.ConfigCommand("enqueue", cfg))
	return root
}
