package jobs_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/r8im/r8im/internal/testenv"
	"github.com/r8im/r8im/storage"
)

// TestAffixFromS3Prefix: a worker publishes every object under
// s3://bucket/prefix/ (no tarball), names relative to the prefix, under the
// target.
func TestAffixFromS3Prefix(t *testing.T) {
	forEachReg(t, func(t *testing.T, reg testenv.RegistryEnv) {
		e := newEnv(t, reg)
		dir := t.TempDir()
		files := map[string]string{"model-00001-of-00002.safetensors": strings.Repeat("1", 6<<20), "model-00002-of-00002.safetensors": strings.Repeat("2", 3<<20), "tokenizer/vocab.txt": "a b c"}
		var url string
		for name, body := range files {
			p := filepath.Join(dir, strings.ReplaceAll(name, "/", "_"))
			if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
			url = e.s3.PutObject(t, "runs/64/out/"+name, p)
		}
		prefix := url[:strings.Index(url, "out/")+len("out/")]
		e.worker(t, 1)
		res := e.affix(t, "run-64", prefix, e.repo(e.proxy.Host, "models/prefix:64"))
		rec := e.waitFor(t, res.ID, time.Minute)
		if rec.State != storage.StateSucceeded {
			t.Fatalf("record %+v", rec)
		}
		root := e.unpack(t, rec.Result)
		for name, body := range files {
			got, err := os.ReadFile(filepath.Join(root, "src/weights", name))
			if err != nil || string(got) != body {
				t.Fatalf("%s in the image: %d bytes, %v", name, len(got), err)
			}
		}
	})
}
