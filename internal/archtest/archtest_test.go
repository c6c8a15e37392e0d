// Package archtest checks that r8im's packages keep to their rooms
// (docs/architecture.md): the dependency direction is
// cmd/* → jobs → imageops, storage → config.
package archtest

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/r8im/r8im"

// forbidden lists, per package, import path prefixes it must not depend on,
// directly or transitively.
var forbidden = map[string][]string{
	"imageops": {module + "/jobs", module + "/storage", module + "/cmd", "github.com/hibiken/asynq", "github.com/redis/go-redis", "github.com/aws/"},
	"storage":  {module + "/jobs", module + "/imageops", module + "/cmd", "github.com/hibiken/asynq"},
	"config":   {module + "/jobs", module + "/storage", module + "/imageops", module + "/cmd", "github.com/hibiken/asynq"},
	"jobs":     {module + "/cmd"},
	"events":   {module + "/cmd"},
}

func TestDependencyDirection(t *testing.T) {
	for pkg, bad := range forbidden {
		t.Run(pkg, func(t *testing.T) {
			out, err := exec.Command("go", "list", "-json=Deps", module+"/"+pkg).Output()
			if err != nil {
				t.Fatalf("go list %s: %v", pkg, err)
			}
			var p struct{ Deps []string }
			if err := json.Unmarshal(out, &p); err != nil {
				t.Fatal(err)
			}
			for _, dep := range p.Deps {
				for _, b := range bad {
					if strings.HasPrefix(dep, b) {
						t.Errorf("%s depends on %s; see docs/architecture.md for the allowed direction", pkg, dep)
					}
				}
			}
		})
	}
}

// forbiddenDirect lists imports a package must not make itself (they may
// still come in through a package it uses): jobs is the only package that
// knows asynq exists.
var forbiddenDirect = map[string][]string{
	"cmd/worker":  {"github.com/hibiken/asynq"},
	"cmd/enqueue": {"github.com/hibiken/asynq"},
	"cmd/r8im":    {"github.com/hibiken/asynq", module + "/jobs", module + "/storage"},
	"storage":     {"github.com/hibiken/asynq"},
	"events":      {"github.com/hibiken/asynq"},
	"config":      {"github.com/hibiken/asynq"},
}

func TestDirectImports(t *testing.T) {
	for pkg, bad := range forbiddenDirect {
		t.Run(pkg, func(t *testing.T) {
			out, err := exec.Command("go", "list", "-json=Imports", module+"/"+pkg).Output()
			if err != nil {
				t.Fatalf("go list %s: %v", pkg, err)
			}
			var p struct{ Imports []string }
			if err := json.Unmarshal(out, &p); err != nil {
				t.Fatal(err)
			}
			for _, imp := range p.Imports {
				for _, b := range bad {
					if strings.HasPrefix(imp, b) {
						t.Errorf("%s imports %s; see docs/architecture.md", pkg, imp)
					}
				}
			}
		})
	}
}

// TestOneRetryRule: which failures are permanent and how long a server
// asked to wait are internal/retry's to say (issue 16): no package keeps a
// rule of its own, and internal/retry depends on nothing else of r8im.
func TestOneRetryRule(t *testing.T) {
	out, err := exec.Command("go", "list", "-json=Deps", module+"/internal/retry").Output()
	if err != nil {
		t.Fatalf("go list internal/retry: %v", err)
	}
	if strings.Contains(string(out), module+"/") {
		t.Errorf("internal/retry depends on another r8im package:\n%s", out)
	}
	grep := exec.Command("git", "grep", "-n", "-E", `func isPermanent|func parseRetryAfter|type permanentError|Header.Get\("Retry-After"\)\)`, "--", "*.go", ":!internal/retry/*", ":!*_test.go")
	grep.Dir = "../.."
	found, _ := grep.Output() // exit 1: nothing found
	if len(found) > 0 {
		t.Errorf("retry rules outside internal/retry (use retry.IsPermanent, retry.Permanent, retry.ParseAfter):\n%s", found)
	}
}
