// Command benchinput writes a deterministic fp16-like weights tarball and
// pushes a synthetic base image, the inputs of scripts/bench-affix.sh.
package main

import (
	"flag"
	"fmt"
	"os"
	"testing"

	"github.com/dustin/go-humanize"

	"github.com/r8im/r8im/internal/testenv"
)

func main() {
	out := flag.String("o", "weights.tar", "tarball to write")
	size := flag.String("size", "1GiB", "total size of the weight shards")
	shards := flag.Int("shards", 8, "number of shards")
	base := flag.String("push-base", "", "also push a Docker base image to this reference (host/repo:tag)")
	flag.Parse()
	total, err := humanize.ParseBytes(*size)
	if err != nil || *shards < 1 {
		fail(fmt.Errorf("bad -size %q or -shards %d", *size, *shards))
	}
	f, err := os.Create(*out)
	if err != nil {
		fail(err)
	}
	spec := testenv.WeightsSpec{Files: *shards, FileSize: int64(total) / int64(*shards), Dir: "src/weights", Seed: 7}
	if _, err := testenv.WriteWeights(f, spec); err != nil {
		fail(err)
	}
	if err := f.Close(); err != nil {
		fail(err)
	}
	if *base != "" {
		// testenv's builders take a testing.TB for their failures.
		testing.Main(func(string, string) (bool, error) { return true, nil }, []testing.InternalTest{{
			Name: "push-base",
			F:    func(t *testing.T) { testenv.Push(t, *base, testenv.BaseImage(t, testenv.Docker, testenv.Amd64)) },
		}}, nil, nil)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "benchinput:", err)
	os.Exit(1)
}
