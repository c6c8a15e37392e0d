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

  affix    add a weights tarball as a new layer on top of a base image
  layers   summarize an image's layers
  extract  stream only the weights out of an image
  remix    the code of one image with the weights of another
  zstd     recompress an image's layers to zstd

Results go to stdout (repo@sha256:…, or JSON with --json); progress and
timings go to stderr.

Registry credentials come from the docker config (DOCKER_CONFIG, credential
helpers) or from a Replicate cog token (--token / COG_TOKEN).`,
		"  r8im affix --base r8.im/acme/base@sha256:… --dest r8.im/acme/ft --tar weights.tar\n  r8im layers r8.im/acme/ft:v1")
	cfg.RegisterFlags(root.PersistentFlags())
	root.PersistentPreRunE = cli.LoadConfig(cfg, lookup)
	g := &globals{cfg: cfg}
	g.register(root)
	root.AddCommand(newAffixCmd(g), newLayersCmd(g), newExtractCmd(g), newRemixCmd(g), newZstdCmd(g), newAddLayerCmd(g), newCloneCmd(g))
	cli.AddHints(root)
	return root
}
