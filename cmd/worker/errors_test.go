package main

import (
	"context"
	"strings"
	"testing"

	"github.com/r8im/r8im/config"
	"github.com/r8im/r8im/internal/testenv"
	"github.com/r8im/r8im/storage"
)

// TestErrorsSayWhatToDo checks the worker's most common failures: each
// message says what went wrong and what to change.
func TestErrorsSayWhatToDo(t *testing.T) {
	t.Run("Redis unreachable", func(t *testing.T) {
		_, err := runWorker(t, map[string]string{"REDIS_URL": "redis://127.0.0.1:1/0", "R8IM_HTTP_ADDR": "127.0.0.1:0"})
		if err == nil {
			t.Fatal("the worker started without Redis")
		}
		for _, want := range []string{"127.0.0.1:1", "does not answer", "start it", "REDIS_URL"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q lacks %q", err, want)
			}
		}
	})
	t.Run("missing bucket", func(t *testing.T) {
		s3 := testenv.S3(t)
		cfg := config.NewWorker().S3
		cfg.Endpoint, cfg.Region, cfg.PathStyle = s3.Endpoint, s3.Region, true
		cfg.AccessKeyID, cfg.SecretAccessKey = config.Secret(s3.AccessKey), config.Secret(s3.SecretKey)
		sources, err := storage.NewSources(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		// What the worker records as the task's last error.
		_, _, err = sources.Open(context.Background(), "s3://r8im-no-such-bucket/runs/1/weights.tar")
		if err == nil {
			t.Fatal("opening a tarball in a missing bucket succeeded")
		}
		for _, want := range []string{"s3://r8im-no-such-bucket/runs/1/weights.tar", "not found", "check the URL", "--s3-endpoint"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q lacks %q", err, want)
			}
		}
	})
}
