package archtest

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

// TestProducersWithoutAsynq: the event receiver builds its work from
// jobs/task, the payloads as plain data, and reaches the queue through an
// interface; neither it nor jobs/task depends on asynq, directly or
// transitively (issue 16). jobs/task knows no Redis, storage or
// configuration either.
func TestProducersWithoutAsynq(t *testing.T) {
	for _, tc := range []struct {
		pkg string
		// prefixes forbids every package path starting with one of them;
		// exact forbids that package alone (jobs, not jobs/task).
		prefixes, exact []string
	}{
		{"events", []string{"github.com/hibiken/asynq", module + "/cmd"}, []string{module + "/jobs"}},
		{"jobs/task", []string{"github.com/hibiken/asynq", "github.com/redis/go-redis", "github.com/aws/", module + "/storage", module + "/config", module + "/cmd"}, []string{module + "/jobs"}},
	} {
		t.Run(tc.pkg, func(t *testing.T) {
			out, err := exec.Command("go", "list", "-json=Deps", module+"/"+tc.pkg).Output()
			if err != nil {
				t.Fatalf("go list %s: %v", tc.pkg, err)
			}
			var p struct{ Deps []string }
			if err := json.Unmarshal(out, &p); err != nil {
				t.Fatal(err)
			}
			if len(p.Deps) == 0 {
				t.Fatalf("go list %s lists no dependencies; is the package there?", tc.pkg)
			}
			for _, dep := range p.Deps {
				for _, b := range tc.prefixes {
					if strings.HasPrefix(dep, b) {
						t.Errorf("%s depends on %s; producers use jobs/task and an Enqueuer interface (docs/architecture.md)", tc.pkg, dep)
					}
				}
				for _, b := range tc.exact {
					if dep == b {
						t.Errorf("%s depends on %s; producers use jobs/task and an Enqueuer interface (docs/architecture.md)", tc.pkg, dep)
					}
				}
			}
		})
	}
}
