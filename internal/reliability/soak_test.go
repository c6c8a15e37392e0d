package reliability

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/r8im/r8im/internal/testenv"
	"github.com/r8im/r8im/storage"
)

// Soak settings, from the environment (make soak sets the big ones; make
// test runs the defaults).
const (
	soakTasksEnv   = "R8IM_SOAK_TASKS"      // affix tasks (default 12; make soak: 500)
	soakWorkersEnv = "R8IM_SOAK_WORKERS"    // worker processes (default 3)
	soakKillsEnv   = "R8IM_SOAK_KILLS"      // SIGKILLs of a busy worker, spread over the run (default 1)
	soakFaultsEnv  = "R8IM_SOAK_FAULT_RATE" // share of registry requests that fail (default 0.10)
	soakSeedEnv    = "R8IM_SOAK_SEED"       // fault and kill choices (default: the time)
)

func envInt(t testing.TB, key string, def int) int {
	t.Helper()
	v := os.Getenv(key)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		t.Fatalf("%s=%q: want a count", key, v)
	}
	return n
}

// TestSoak publishes many affix tasks across several worker processes while
// a tenth of registry requests fail (5xx, 429 with Retry-After, dropped
// connections, cut bodies, slow answers) and busy workers are SIGKILLed
// and replaced. Every task must succeed exactly once: as many successes,
// records and stream entries as tasks, no duplicate, every image valid.
func TestSoak(t *testing.T) {
	t.Parallel()
	n := envInt(t, soakTasksEnv, 12)
	workers := envInt(t, soakWorkersEnv, 3)
	kills := envInt(t, soakKillsEnv, 1)
	rate := 0.10
	if v := os.Getenv(soakFaultsEnv); v != "" {
		var err error
		if rate, err = strconv.ParseFloat(v, 64); err != nil || rate < 0 || rate > 0.5 {
			t.Fatalf("%s=%q: want a share between 0 and 0.5", soakFaultsEnv, v)
		}
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv(soakSeedEnv); v != "" {
		seed, _ = strconv.ParseUint(v, 10, 64)
	}
	t.Logf("soak: %d tasks, %d workers, %d kills, %.0f%% registry faults, %s=%d", n, workers, kills, rate*100, soakSeedEnv, seed)

	// Distribution 2.8 only: the soak is long, and the faults it injects
	// (TestRegistryFaults, TestWorkerKilledMidUpload) run on every
	// registry of testenv.Registries already.
	s := newStack(t, stackOptions{redis: testenv.RedisOptions{AppendOnly: true}})
	files := make([][]testenv.WeightsFile, n)
	urls := make([]string, n)
	for i := range n {
		var p string
		p, files[i] = testenv.WeightsTar(t, testenv.WeightsSpec{Files: 1, FileSize: 48 << 10, Seed: 10_000 + uint64(i)})
		urls[i] = s.s3.PutObject(t, fmt.Sprintf("soak/%d/weights.tar", i), p)
	}

	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(seed, 1))
	faults := []testenv.Fault{
		{Status: http.StatusInternalServerError},
		{Status: http.StatusBadGateway},
		{Status: http.StatusServiceUnavailable},
		{Status: http.StatusTooManyRequests, RetryAfter: "1"},
		{}, // drop the connection
		{Truncate: true},
		{Delay: 500 * time.Millisecond},
	}
	s.proxy.SetFaultFunc(func(r *http.Request) (testenv.Fault, bool) {
		if r.URL.Path == "/v2/" || strings.Contains(r.URL.Path, "/base/") {
			return testenv.Fault{}, false // the base is pushed (and read) by the test itself
		}
		mu.Lock()
		defer mu.Unlock()
		if rng.Float64() >= rate {
			return testenv.Fault{}, false
		}
		return faults[rng.IntN(len(faults))], true
	})

	procs := make([]*workerProc, workers)
	for i := range procs {
		procs[i] = s.startWorker(t, fmt.Sprintf("w%d", i), workerOptions{concurrency: 2})
	}
	ids := make([]string, n)
	for i := range n {
		ids[i] = s.affix(t, fmt.Sprintf("soak-%d", i), urls[i], fmt.Sprintf("%s/models/soak:%d", s.proxy.Host, i))
	}

	succeeded := func() int {
		c, _ := s.rdb.ZCard(context.Background(), "r8im:records:succeeded").Result()
		return int(c)
	}
	// Kills, spread over the run: each once a share of the tasks is done,
	// of a worker that is running one (uploads are slowed meanwhile, so
	// that one is), replaced at once.
	for k := range kills {
		at := k * n / kills
		poll(t, 10*time.Minute, func() bool { return succeeded() >= at }, func() string {
			return fmt.Sprintf("%d of %d succeeded before kill %d", succeeded(), n, k+1)
		})
		s.proxy.Throttle(8 << 10)
		i := busyWorker(t, s, procs)
		procs[i].kill()
		s.proxy.Throttle(0)
		t.Logf("killed worker %s at %d/%d succeeded", procs[i].name, succeeded(), n)
		procs[i] = s.startWorker(t, fmt.Sprintf("w%d-after-kill-%d", i, k+1), workerOptions{concurrency: 2})
	}
	start := time.Now()
	poll(t, leaseRecovery+time.Duration(n)*time.Second, func() bool { return succeeded() >= n }, func() string {
		failed, _ := s.records.List(context.Background(), storage.StateFailed, 5)
		return fmt.Sprintf("%d of %d succeeded; failed: %+v", succeeded(), n, failed)
	})
	t.Logf("all %d succeeded (%s after the last kill); %d registry faults injected", n, time.Since(start).Round(time.Second), s.proxy.Injected())
	s.proxy.SetFaultFunc(nil)

	ctx := context.Background()
	recs, err := s.records.List(ctx, storage.StateSucceeded, n+10)
	if err != nil || len(recs) != n {
		t.Fatalf("%d succeeded records (%v), want %d", len(recs), err, n)
	}
	if failed, _ := s.records.List(ctx, storage.StateFailed, 10); len(failed) != 0 {
		t.Fatalf("failed records: %+v", failed)
	}
	keys, err := s.rdb.Keys(ctx, "r8im:record:*").Result() // the test's own DB (testenv.Redis)
	if err != nil || len(keys) != n {
		t.Fatalf("%d record keys (%v), want %d", len(keys), err, n)
	}
	stream := s.streamIDs(t)
	slices.Sort(stream)
	if distinct := len(slices.Compact(slices.Clone(stream))); len(stream) != n || distinct != n {
		t.Fatalf("%d stream entries, %d distinct; want %d, no duplicate", len(stream), distinct, n)
	}
	if rate > 0 && s.proxy.Injected() == 0 {
		t.Fatal("no registry fault was injected")
	}
	if got := checkRegistry(t, s.reg); got < n+1 {
		t.Fatalf("checked %d manifests, want %d results and the base", got, n)
	}
	for i, id := range ids {
		rec, err := s.records.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		s.validate(t, rec.Result, files[i])
	}
}

// busyWorker picks a worker process that is running a task, by asking
// asynq which servers have active workers.
func busyWorker(t testing.TB, s *stack, procs []*workerProc) int {
	t.Helper()
	found := -1
	poll(t, time.Minute, func() bool {
		servers, err := s.insp.Servers()
		if err != nil {
			return false
		}
		for _, srv := range servers {
			if len(srv.ActiveWorkers) == 0 {
				continue
			}
			for i, p := range procs {
				if p.cmd.Process.Pid == srv.PID {
					found = i
					return true
				}
			}
		}
		return false
	}, func() string { return "no worker process is running a task" })
	return found
}
