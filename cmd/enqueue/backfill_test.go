package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/r8im/r8im/internal/testenv"
	"github.com/r8im/r8im/jobs"
	"github.com/r8im/r8im/storage"
)

// TestBackfillCommand drives enqueue backfill zstd and enqueue batch status
// over a real registry and Redis (the conversion itself is jobs' test).
func TestBackfillCommand(t *testing.T) {
	rds, reg := testenv.Redis(t), testenv.Registry(t)
	amd64 := v1.Platform{OS: "linux", Architecture: "amd64"}
	base := testenv.BaseImage(t, testenv.Docker, amd64)
	for _, ref := range []string{"acme/model:v1", "acme/model:v2", "acme/model:dev", "acme/other:v1"} {
		testenv.Push(t, reg.Host+"/"+ref, base)
	}
	vars := map[string]string{"REDIS_URL": rds.URL()}

	// --dry-run lists, queues nothing and records no batch.
	out, errOut, err := enqueue(t, vars, "backfill", "zstd", "--repo", reg.Host+"/acme/model", "--match", "v*", "--dry-run", "--batch-id", "dry")
	if err != nil {
		t.Fatalf("dry run: %v\n%s", err, errOut)
	}
	if strings.Count(out, "would enqueue") != 2 || strings.Contains(out, ":dev") || !strings.Contains(out, reg.Host+"/acme/model:v1-zstd") {
		t.Errorf("dry run printed:\n%s", out)
	}
	if !strings.Contains(errOut, "would queue 2") {
		t.Errorf("dry run summary: %s", errOut)
	}
	if _, _, err := enqueue(t, vars, "batch", "status", "dry"); err == nil || !strings.Contains(err.Error(), "no batch") {
		t.Errorf("batch status of a dry run = %v; want no batch", err)
	}

	// --registry walks the catalog; --match with ':' filters on repo:tag.
	out, errOut, err = enqueue(t, vars, "backfill", "zstd", "--registry", reg.Host, "--match", "acme/*:v1", "--batch-id", "b1", "--json", "--rate", "50")
	if err != nil {
		t.Fatalf("backfill: %v\n%s", err, errOut)
	}
	var sum jobs.BackfillSummary
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatalf("--json output %q: %v", out, err)
	}
	if sum.Enqueued != 2 || len(sum.Items) != 2 || sum.BatchID != "b1" {
		t.Errorf("backfill summary: %+v", sum)
	}
	out, _, err = enqueue(t, vars, "batch", "status", "b1", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var st storage.BatchStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.Total != 2 || st.Pending != 2 || !st.Sealed {
		t.Errorf("batch status: %s (%v)", out, err)
	}
	out, _, _ = enqueue(t, vars, "batch", "status", "b1")
	if !strings.Contains(out, "pending    2") {
		t.Errorf("batch status:\n%s", out)
	}

	// The same images again, from a file: nothing new is queued.
	list := filepath.Join(t.TempDir(), "images.txt")
	body := "# re-run\n" + reg.Host + "/acme/model:v1\n\n" + reg.Host + "/acme/other:v1\n"
	if err := os.WriteFile(list, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	_, errOut, err = enqueue(t, vars, "backfill", "zstd", "--images", list, "--batch-id", "b2")
	if err != nil || !strings.Contains(errOut, "queued 0") || !strings.Contains(errOut, "2 already queued or done") {
		t.Errorf("re-run: %v\n%s", err, errOut)
	}

	// Bad input says what to do.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"backfill", "zstd"}, "images"},
		{[]string{"backfill", "zstd", "--repo", reg.Host + "/acme/model", "--in-place", "--dest-repo-suffix", "-z"}, "in-place"},
		{[]string{"backfill", "zstd", "--repo", reg.Host + "/acme/model", "--match", "[", "--dry-run"}, "not a valid glob"},
		{[]string{"backfill", "zstd", "--repo", reg.Host + "/acme/model", "--match", "nothing*"}, "no images to backfill"},
		{[]string{"backfill", "zstd", "--repo", reg.Host + "/acme/model", "--batch-id", "b1"}, "already exists"},
		{[]string{"backfill", "zstd", "--images", "/no/such/file"}, "reading --images"},
	} {
		_, _, err := enqueue(t, vars, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("enqueue %v = %v; want an error mentioning %q", tc.args, err, tc.want)
		}
	}
	// An image that cannot be resolved is reported with its reason, the
	// others are queued, and the exit is non-zero.
	body = reg.Host + "/acme/model:v2\n" + reg.Host + "/acme/model:missing\n"
	if err := os.WriteFile(list, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _, err = enqueue(t, vars, "backfill", "zstd", "--images", list, "--batch-id", "b3")
	if err == nil || !strings.Contains(err.Error(), "1 of 2 images could not be queued") {
		t.Errorf("backfill with a missing image = %v", err)
	}
	if !strings.Contains(out, "missing") || !strings.Contains(out, "failed") || !strings.Contains(out, "enqueued") {
		t.Errorf("backfill with a missing image printed:\n%s", out)
	}
}
