// Command r8im publishes model weights onto container images directly against
// the registry, without docker: the synchronous, one-shot CLI.
package main

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/r8im/r8im/config"
	"github.com/r8im/r8im/internal/cli"
)

func main() { cli.Main(newRoot(os.LookupEnv)) }

func newRoot(lookup config.LookupFunc) *cobra.Command {
	cfg := config.NewR8im()
	root := cli.Root("r8im",
		"Publish model weights onto container images, straight against the registry",
		`r8im adds weights to existing images without docker, without a GPU and
without downloading base layers: it talks to the registry directly.

Verbs (see the README's status table for what is built): affix, extract,
layers, remix, zstd.

Registry credentials come from the docker config (DOCKER_CONFIG, credential
helpers) or from a Replicate cog token (--token / COG_TOKEN).`,
		"  r8im --help\n  COG_TOKEN=... r8im --registry r8.im <verb> --help")
	cfg.RegisterFlags(root.PersistentFlags())
	root.PersistentPreRunE = cli.LoadConfig(cfg, lookup)
	return root
}
