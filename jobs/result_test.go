package jobs_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/r8im/r8im/internal/testenv"
	"github.com/r8im/r8im/jobs"
	"github.com/r8im/r8im/jobs/task"
	"github.com/r8im/r8im/storage"
)

// TestPublishWritesTaskResult: a published task's asynq result (what
// asynqmon shows, TaskInfo.Result) is the image it published, the same as
// its record's.
func TestPublishWritesTaskResult(t *testing.T) {
	e := newEnv(t, testenv.Registries(t)[0].Start(t)) // the result is the worker's, not the registry's
	tarPath, _ := testenv.WeightsTar(t, testenv.WeightsSpec{Files: 1, FileSize: 64 << 10, Seed: 66})
	url := e.s3.PutObject(t, "runs/66/weights.tar", tarPath)
	e.worker(t, 1)
	res := e.affix(t, "run-66", url, e.repo(e.proxy.Host, "models/result:66"))
	rec := e.waitFor(t, res.ID, time.Minute)
	if rec.State != storage.StateSucceeded {
		t.Fatalf("record %+v", rec)
	}
	insp := asynq.NewInspectorFromRedisClient(e.rdb)
	waitTaskState(t, insp, task.QueuePublish, res.ID, asynq.TaskStateCompleted)
	info, err := insp.GetTaskInfo(task.QueuePublish, res.ID)
	if err != nil {
		t.Fatal(err)
	}
	var got jobs.TaskResult
	if err := json.Unmarshal(info.Result, &got); err != nil {
		t.Fatalf("task result %q: %v", info.Result, err)
	}
	want := jobs.TaskResult{Ref: rec.Result, Digest: rec.Result[strings.LastIndexByte(rec.Result, '@')+1:], BaseDigest: rec.BaseDigest, LayerDigest: rec.LayerDigest}
	if got != want || !strings.HasPrefix(got.Digest, "sha256:") {
		t.Fatalf("task result %+v; want %+v", got, want)
	}
}
