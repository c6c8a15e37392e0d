package cli

import (
	"errors"
	"strings"

	"github.com/spf13/cobra"

	"github.com/r8im/r8im/imageops"
)

// hintText says, for one imageops.Remedy, what a user of each program
// changes: the CLIs' flags and variables, a worker's variables and task
// fields. "" when the program offers no way round.
type hintText struct{ cli, worker string }

// hints is where the library's remedies meet r8im's settings: imageops
// errors never name a flag or a variable (they serve other programs too).
var hints = map[imageops.Remedy]hintText{
	imageops.RemedyCredentials: {
		cli:    "log in with `docker login` (or DOCKER_CONFIG), or pass a cog token with --token / COG_TOKEN",
		worker: "give the worker credentials that may: DOCKER_CONFIG, or a cog token in COG_TOKEN",
	},
	imageops.RemedyRootCAs: {
		cli:    "give the registry's CA with --ca-file / R8IM_CA_FILE, or SSL_CERT_FILE, or skip verification with --insecure / R8IM_INSECURE",
		worker: "give the registry's CA with R8IM_CA_FILE (or SSL_CERT_FILE), or skip verification with R8IM_INSECURE",
	},
	imageops.RemedyMaxManifestSize: {
		cli:    "raise --max-manifest-size / R8IM_MAX_MANIFEST_SIZE only if the image is genuine",
		worker: "raise R8IM_MAX_MANIFEST_SIZE only if the image is genuine",
	},
	imageops.RemedyMaxWeightsSize: {
		cli:    "raise --max-weights-size / R8IM_MAX_WEIGHTS_SIZE if the weights are genuine",
		worker: "raise R8IM_MAX_WEIGHTS_SIZE if the weights are genuine",
	},
	imageops.RemedyMaxTarEntries: {
		cli:    "raise --max-tar-entries / R8IM_MAX_TAR_ENTRIES if the weights are genuine",
		worker: "raise R8IM_MAX_TAR_ENTRIES if the weights are genuine",
	},
	imageops.RemedyMaxNameLength: {
		cli:    "raise --max-name-length / R8IM_MAX_NAME_LENGTH if the names are genuine",
		worker: "raise R8IM_MAX_NAME_LENGTH if the names are genuine",
	},
	imageops.RemedyPlatform: {
		cli:    "choose one with --platform (os/arch), or --platform all",
		worker: "choose one with the task's platform (os/arch), or all",
	},
	imageops.RemedyAllowOutsideTarget: {
		cli: "use --allow-outside-target to keep entries outside the target",
		// a worker has no way round: a task's weights stay under its target
	},
}

// Hint says how a user of r8im or enqueue gets past err with their flags
// and variables, or "" when only fixing the input can.
func Hint(err error) string { return hint(err, func(h hintText) string { return h.cli }) }

// WorkerHint is Hint for a worker's failed tasks: its variables and the
// task's fields.
func WorkerHint(err error) string { return hint(err, func(h hintText) string { return h.worker }) }

func hint(err error, pick func(hintText) string) string {
	var out []string
	for _, r := range imageops.Remedies(err) {
		if s := pick(hints[r]); s != "" {
			out = append(out, s)
		}
	}
	return strings.Join(out, "; ")
}

// hinted is an error with r8im's hint appended to its text.
type hinted struct {
	err  error
	hint string
}

func (e *hinted) Error() string { return e.err.Error() + "; hint: " + e.hint }
func (e *hinted) Unwrap() error { return e.err }

// WithHint adds Hint(err) to err's text, once.
func WithHint(err error) error {
	var already *hinted
	if err == nil || errors.As(err, &already) {
		return err
	}
	if h := Hint(err); h != "" {
		return &hinted{err: err, hint: h}
	}
	return err
}

// AddHints makes every command under root return its errors WithHint.
func AddHints(root *cobra.Command) {
	if run := root.RunE; run != nil {
		root.RunE = func(cmd *cobra.Command, args []string) error { return WithHint(run(cmd, args)) }
	}
	for _, c := range root.Commands() {
		AddHints(c)
	}
}
