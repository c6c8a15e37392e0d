package archtest

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/r8im/r8im/config"
)

// TestLibraryTextNamesNoSetting: imageops serves other programs too, so
// none of its strings names one of r8im's flags or environment variables.
// What gets past an error is an imageops.Remedy; the commands turn it into
// their own settings (internal/cli.Hint, WorkerHint).
func TestLibraryTextNamesNoSetting(t *testing.T) {
	flags := pflag.NewFlagSet("all", pflag.ContinueOnError)
	config.NewR8im().RegisterFlags(flags)
	names := map[string]bool{}
	flags.VisitAll(func(f *pflag.Flag) { names[f.Name] = true })
	for _, f := range []string{"platform", "allow-outside-target", "layers", "jobs", "min-size", "level", "target", "compression"} {
		names[f] = true // command flags of r8im affix, extract, zstd
	}
	flag := regexp.MustCompile(`--([a-z][a-z0-9-]+)`)
	env := regexp.MustCompile(`\b(R8IM_[A-Z_]+|COG_TOKEN|DOCKER_CONFIG|REDIS_URL)\b`)

	files, err := filepath.Glob("../../imageops/*.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("listing imageops: %v (%d files)", err, len(files))
	}
	fset := token.NewFileSet()
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, file, nil, 0) // comments are not parsed: docs may name anything
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			lit, ok := n.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			s, err := strconv.Unquote(lit.Value)
			if err != nil {
				return true
			}
			if m := env.FindString(s); m != "" {
				t.Errorf("%s: imageops text names the variable %s: %q", fset.Position(lit.Pos()), m, s)
			}
			for _, m := range flag.FindAllStringSubmatch(s, -1) {
				if names[m[1]] {
					t.Errorf("%s: imageops text names the flag --%s: %q", fset.Position(lit.Pos()), m[1], s)
				}
			}
			return true
		})
	}
}
