package cli

import (
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/r8im/r8im/config"
	"github.com/r8im/r8im/imageops"
)

// NewLogger builds the process logger: JSON, or text when the format is
// text, or auto and w is a terminal.
func NewLogger(c config.Log, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.SlogLevel()}
	text := c.Format == "text" || c.Format == "auto" && IsTerminal(w)
	if text {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// ImageOptions turns the registry settings into imageops options. A
// DOCKER_CONFIG setting is exported to the environment, where
// go-containerregistry's default keychain reads it.
func ImageOptions(reg config.Registry) ([]imageops.Option, error) {
	if reg.DockerConfig != "" {
		if err := os.Setenv("DOCKER_CONFIG", reg.DockerConfig); err != nil {
			return nil, err
		}
	}
	return []imageops.Option{
		imageops.WithDefaultRegistry(reg.Host),
		imageops.WithCogToken(string(reg.Token)),
		imageops.WithInsecure(reg.Insecure),
		imageops.WithChunkSize(reg.ChunkSize),
		imageops.WithRequireMount(reg.RequireMount),
	}, nil
}

// NetworkOptions turns the network settings into imageops options: the CA
// file, the manifest size cap and the idle timeout.
func NetworkOptions(n *config.Network) ([]imageops.Option, error) {
	roots, err := n.RootCAs()
	if err != nil {
		return nil, fmt.Errorf("R8IM_CA_FILE or --ca-file: %w", err)
	}
	return []imageops.Option{
		imageops.WithRootCAs(roots),
		imageops.WithMaxManifestSize(n.MaxManifestSize),
		imageops.WithIdleTimeout(n.IdleTimeout),
	}, nil
}
