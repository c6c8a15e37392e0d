package jobs_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/r8im/r8im/internal/testenv"
	"github.com/r8im/r8im/jobs/task"
	"github.com/r8im/r8im/storage"
)

// A task that names a platform its single-platform base does not have fails
// at once, saying which platform the base has, instead of publishing the
// base's own platform under the name of another.
func TestAffixRefusesAnotherPlatform(t *testing.T) {
	reg := testenv.Registries(t)[0].Start(t) // the platform check is the worker's, not the registry's
	e := newEnv(t, reg)
	tarPath, _ := testenv.WeightsTar(t, testenv.WeightsSpec{Seed: 65})
	url := e.s3.PutObject(t, "runs/65/weights.tar", tarPath)
	e.worker(t, 1)
	res, err := e.enq.Enqueue(context.Background(), task.Request{Queue: task.QueuePublish, EventID: "run-arm", Payload: task.AffixPayload{
		EventID: "run-arm", Base: e.base, Weights: url, Dest: e.repo(e.proxy.Host, "models/arm"),
		Created: created, Platform: "linux/arm64",
	}})
	if err != nil {
		t.Fatal(err)
	}
	rec := e.waitFor(t, res.ID, time.Minute)
	if rec.State != storage.StateFailed || rec.Attempts != 1 || !strings.Contains(rec.LastError, "single-platform") || !strings.Contains(rec.LastError, "amd64") {
		t.Fatalf("record %+v; want failed at once, naming the base's platform", rec)
	}
}
