// Package cli holds the cobra wiring shared by the r8im, worker and enqueue
// commands: version strings, configuration loading and error exits.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/r8im/r8im/config"
	"github.com/r8im/r8im/internal/untrusted"
)

// Config is what every process configuration offers (see package config).
type Config interface {
	Load(config.LookupFunc)
	Validate() error
	Redacted() map[string]string
}

// commit is the VCS commit, stamped by `make build` and the Dockerfile with
// -ldflags "-X github.com/r8im/r8im/internal/cli.commit=…" for builds
// without Go's own VCS stamp (-buildvcs=false, or no .git in a container
// build context).
var commit string

// Version reports the module version and VCS commit the binary was built from.
func Version() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	rev, dirty := commit, ""
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev == "" {
		return fmt.Sprintf("%s (%s)", info.Main.Version, info.GoVersion)
	}
	return fmt.Sprintf("%s (commit %s%s, %s)", info.Main.Version, rev, dirty, info.GoVersion)
}

// Root returns a cobra root command with what every r8im program shares:
// --version, help (with every flag) when run bare, "unknown command" for
// stray arguments, no usage dump on errors (the error says what to fix), and
// errors printed once, by Main.
func Root(use, short, long, example string) *cobra.Command {
	return &cobra.Command{
		Use:           use,
		Short:         short,
		Long:          long,
		Example:       example,
		Version:       Version(),
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE:          func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
}

// LoadConfig returns a PersistentPreRunE that loads cfg from the environment
// (flags given on the command line win) and validates it.
func LoadConfig(cfg Config, lookup config.LookupFunc) func(*cobra.Command, []string) error {
	return func(*cobra.Command, []string) error {
		cfg.Load(lookup)
		return cfg.Validate()
	}
}

// ConfigCommand prints the effective configuration, secrets redacted, once
// it validates: what an operator runs to check a deployment's settings.
func ConfigCommand(prog string, cfg Config) *cobra.Command {
	return &cobra.Command{
		Use:   "config",
		Short: "Validate and print the effective configuration (secrets redacted)",
		Long: "Loads the configuration from the environment and flags exactly as " + prog + "\n" +
			"would, reports every problem at once, and prints each setting keyed by\n" +
			"its environment variable, with tokens, passwords and keys redacted.",
		Example: "  REDIS_URL=redis://:secret@redis:6379/0 " + prog + " config",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return PrintJSON(cmd.OutOrStdout(), cfg.Redacted())
		},
	}
}

// PrintJSON writes v as indented JSON (map keys sorted).
func PrintJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// Main runs root with a context cancelled by SIGINT/SIGTERM, prints an error
// once on stderr and exits non-zero (130 when interrupted). With
// R8IM_CPUPROFILE set it writes a CPU profile of the whole run to that file
// (for `go tool pprof`; docs/performance.md).
func Main(root *cobra.Command) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	endProfile := startCPUProfile(root.ErrOrStderr())
	err := root.ExecuteContext(ctx)
	endProfile()
	stop()
	if err == nil {
		return
	}
	fmt.Fprintf(root.ErrOrStderr(), "%s: %s\n", root.Name(), SafeText(err.Error()))
	if errors.Is(err, context.Canceled) {
		os.Exit(130)
	}
	os.Exit(1)
}

// startCPUProfile starts the CPU profile R8IM_CPUPROFILE names, if any, and
// returns what stops it. A profile that cannot be written is reported, not
// fatal: it is a measuring aid.
func startCPUProfile(stderr io.Writer) func() {
	path := os.Getenv("R8IM_CPUPROFILE")
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err == nil {
		if err = pprof.StartCPUProfile(f); err != nil {
			f.Close()
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "R8IM_CPUPROFILE: not profiling: %v\n", err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			fmt.Fprintf(stderr, "R8IM_CPUPROFILE: writing %s: %v\n", path, err)
		}
	}
}

// SafeText is s fit for a terminal: each line stripped of escape sequences
// and control characters (untrusted.Text) and capped, at most 100 lines.
// Errors may quote what a registry, weights host or receiver wrote.
func SafeText(s string) string {
	lines := strings.Split(s, "\n")
	if len(lines) > 100 {
		lines = append(lines[:100], "…")
	}
	for i, l := range lines {
		lines[i] = untrusted.Text(l, 4096)
	}
	return strings.Join(lines, "\n")
}
