package main

import (
	"strings"
	"testing"

	"github.com/r8im/r8im/internal/testenv"
)

// TestErrorsSayWhatToDo checks the CLI's most common failures: each message
// says what went wrong and what to do about it.
func TestErrorsSayWhatToDo(t *testing.T) {
	reg := testenv.AuthRegistry(t, "alice", "s3cret-pass")
	t.Setenv("DOCKER_CONFIG", dockerConfig(t, nil)) // no credentials
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"bad reference", []string{"layers", "Not A Ref!!"}, []string{`"Not A Ref!!" is not an image reference`, "use host/repo:tag or host/repo@sha256:"}},
		{"bad base reference", []string{"affix", "--base", "acme/base@sha256:123", "--dest", reg.Host + "/m", "--tar", "/dev/null"}, []string{"base", "not an image reference", "use host/repo:tag"}},
		{"unauthorized", []string{"layers", reg.Host + "/private/base:v1"}, []string{"unauthorized", "docker login"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := r8im(t, nil, tc.args...)
			if err == nil {
				t.Fatalf("r8im %v succeeded", tc.args)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("r8im %v: error %q lacks %q", tc.args, err, w)
				}
			}
		})
	}
}

// TestCompletionAndVersion: shell completion scripts for bash, zsh and fish,
// and --version with the module version and Go version.
func TestCompletionAndVersion(t *testing.T) {
	for shell, marker := range map[string]string{"bash": "bash completion", "zsh": "#compdef r8im", "fish": "complete -c r8im"} {
		out, _, err := r8im(t, nil, "completion", shell)
		if err != nil || !strings.Contains(out, marker) {
			t.Errorf("r8im completion %s = %v; output lacks %q:\n%.300s", shell, err, marker, out)
		}
	}
	out, _, err := r8im(t, nil, "--version")
	if err != nil || !strings.HasPrefix(out, "r8im version ") || !strings.Contains(out, "go1.") {
		t.Errorf("r8im --version = %q, %v; want the module and Go versions", out, err)
	}
}
