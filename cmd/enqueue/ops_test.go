package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/r8im/r8im/internal/testenv"
	"github.com/r8im/r8im/storage"
)

// affixArgs queues an affix of event id with weights, no worker running.
func affixArgs(id, weights string, extra ...string) []string {
	return append([]string{"affix", "--base", "r8.im/acme/base:v1", "--weights", weights, "--dest", "r8.im/acme/ft:" + id,
		"--event-id", id, "--created", "2026-11-20T08:00:00Z", "--queue", "publish"}, extra...)
}

// TestOperatorVerbsTakeEventIDs: status, cancel, retry and wait take the
// event id an operator knows; wait on an id that names nothing fails with
// what ids look like; list takes asynq's states.
func TestOperatorVerbsTakeEventIDs(t *testing.T) {
	vars := map[string]string{"REDIS_URL": testenv.Redis(t).URL()}
	if _, stderr, err := enqueue(t, vars, affixArgs("run-42", "s3://w/run-42.tar")...); err != nil {
		t.Fatalf("enqueue affix: %v\n%s", err, stderr)
	}

	stdout, _, err := enqueue(t, vars, "status", "run-42", "--json")
	var rec storage.Record
	if err != nil || json.Unmarshal([]byte(stdout), &rec) != nil || rec.ID != "affix:run-42" || rec.State != storage.StateQueued {
		t.Fatalf("status run-42: %v %+v", err, rec)
	}
	for _, id := range []string{"nope", "affix:nope"} {
		_, _, err = enqueue(t, vars, "wait", id)
		if err == nil || !strings.Contains(err.Error(), `"`+id+`"`) || !strings.Contains(err.Error(), "affix:<event id>") {
			t.Fatalf("wait %s = %v; want an error naming it and saying what ids look like", id, err)
		}
	}
	if _, stderr, err := enqueue(t, vars, "cancel", "run-42"); err != nil || !strings.Contains(stderr, "cancelled affix:run-42") {
		t.Fatalf("cancel run-42: %v %s", err, stderr)
	}
	for state, want := range map[string]bool{"archived": true, "failed": true, "pending": false, "retry": false} {
		stdout, _, err := enqueue(t, vars, "list", "--state", state)
		if err != nil || strings.Contains(stdout, "affix:run-42") != want {
			t.Errorf("list --state %s: %v\n%s\nwant affix:run-42 listed: %v", state, err, stdout, want)
		}
	}
	if _, _, err := enqueue(t, vars, "list", "--state", "bogus"); err == nil || !strings.Contains(err.Error(), "archived") {
		t.Errorf("list --state bogus = %v; want the states listed", err)
	}
	if _, stderr, err := enqueue(t, vars, "retry", "run-42"); err != nil || !strings.Contains(stderr, "requeued affix:run-42") {
		t.Fatalf("retry run-42: %v %s", err, stderr)
	}
	if stdout, _, err := enqueue(t, vars, "list", "--state", "pending", "--queue", "publish"); err != nil || !strings.Contains(stdout, "affix:run-42") {
		t.Fatalf("list --state pending after retry: %v\n%s", err, stdout)
	}
}

// TestEnqueueRefusesBeforeQueueing: what the worker would refuse, and an
// event id reused for other work, are errors of enqueue itself.
func TestEnqueueRefusesBeforeQueueing(t *testing.T) {
	vars := map[string]string{"REDIS_URL": testenv.Redis(t).URL()}
	if _, _, err := enqueue(t, vars, affixArgs("run-1", "s3://w/run-1.tar", "--level", "-1")...); err == nil || !strings.Contains(err.Error(), "gzip level -1: use 1 (fastest) to 9") {
		t.Fatalf("affix --level -1 = %v; want the level refused", err)
	}
	if _, stderr, err := enqueue(t, vars, affixArgs("run-1", "s3://w/run-1.tar")...); err != nil {
		t.Fatalf("affix: %v %s", err, stderr)
	}
	if _, stderr, err := enqueue(t, vars, affixArgs("run-1", "s3://w/run-1.tar")...); err != nil || !strings.Contains(stderr, "already queued") {
		t.Fatalf("the same affix again: %v %s", err, stderr)
	}
	if _, _, err := enqueue(t, vars, affixArgs("run-1", "s3://w/other.tar")...); err == nil || !strings.Contains(err.Error(), "affix:run-1 is already queued or done with another weights") {
		t.Fatalf("another affix under the same event id = %v; want it refused naming weights", err)
	}
}

// TestHelpShowsTheFlagsACommandUses: no receiver or registry settings on
// wait; serve has them; the environment still sets what has no flag here.
func TestHelpShowsTheFlagsACommandUses(t *testing.T) {
	help := func(args ...string) string {
		t.Helper()
		stdout, _, err := enqueue(t, nil, append(args, "--help")...)
		if err != nil {
			t.Fatalf("%v --help: %v", args, err)
		}
		return stdout
	}
	for _, tc := range []struct {
		cmd        []string
		want, deny []string
	}{
		{[]string{"wait"}, []string{"--redis-url", "--json"}, []string{"--event-tolerance", "--affix-timeout", "--max-event-bodies", "--record-ttl", "--log-level"}},
		{[]string{"status"}, []string{"--redis-url"}, []string{"--event-tolerance", "--affix-timeout"}},
		{[]string{"list"}, []string{"--redis-url", "--state"}, []string{"--event-tolerance"}},
		{[]string{"cancel"}, []string{"--redis-url", "--record-ttl"}, []string{"--event-tolerance", "--affix-timeout"}},
		{[]string{"affix"}, []string{"--redis-url", "--affix-timeout"}, []string{"--event-tolerance", "--max-event-bodies"}},
		{[]string{"serve"}, []string{"--redis-url", "--event-tolerance", "--max-event-bodies", "--affix-timeout"}, nil},
		{[]string{"config"}, []string{"--redis-url", "--event-tolerance", "--affix-timeout"}, nil},
	} {
		out := help(tc.cmd...)
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("enqueue %s --help lacks %s:\n%s", tc.cmd[0], w, out)
			}
		}
		for _, d := range tc.deny {
			if strings.Contains(out, d) {
				t.Errorf("enqueue %s --help shows %s, which it does not use:\n%s", tc.cmd[0], d, out)
			}
		}
	}
	// Environment variables still configure every setting.
	vars := map[string]string{"REDIS_URL": "redis://127.0.0.1:1/0", "R8IM_EVENT_TOLERANCE": "7m"}
	stdout, _, err := enqueue(t, vars, "config")
	if err != nil || !strings.Contains(stdout, `"R8IM_EVENT_TOLERANCE": "7m0s"`) || !strings.Contains(stdout, "127.0.0.1:1") {
		t.Fatalf("config from the environment: %v\n%s", err, stdout)
	}
	// A flag given to a subcommand wins over the environment.
	stdout, _, err = enqueue(t, vars, "config", "--event-tolerance", "2m")
	if err != nil || !strings.Contains(stdout, `"R8IM_EVENT_TOLERANCE": "2m0s"`) {
		t.Fatalf("config --event-tolerance 2m: %v\n%s", err, stdout)
	}
}
