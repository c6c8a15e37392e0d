package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func runWorker(t *testing.T, vars map[string]string, args ...string) (string, error) {
	t.Helper()
	root := newRoot(env(vars))
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

func TestConfigPrintsRedactedEffectiveSettings(t *testing.T) {
	out, err := runWorker(t, map[string]string{
		"REDIS_URL": "redis://:hunter2@redis.internal:6379/2", "COG_TOKEN": "r8_tok3n",
		"R8IM_CONCURRENCY": "3", "AWS_ACCESS_KEY_ID": "AKIAX", "AWS_SECRET_ACCESS_KEY": "s3cr3t",
	}, "--concurrency", "7", "config")
	if err != nil {
		t.Fatalf("worker config: %v\n%s", err, out)
	}
	for _, secret := range []string{"hunter2", "r8_tok3n", "s3cr3t"} {
		if strings.Contains(out, secret) {
			t.Errorf("output shows secret %q:\n%s", secret, out)
		}
	}
	var got map[string]string
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out)
	}
	if got["R8IM_CONCURRENCY"] != "7" {
		t.Errorf("R8IM_CONCURRENCY = %q; the --concurrency flag (7) must win over the environment (3)", got["R8IM_CONCURRENCY"])
	}
	if !strings.Contains(got["REDIS_URL"], "redis.internal:6379/2") {
		t.Errorf("REDIS_URL = %q; the non-secret parts must stay readable", got["REDIS_URL"])
	}
}

func TestConfigReportsEveryProblem(t *testing.T) {
	_, err := runWorker(t, map[string]string{"R8IM_CONCURRENCY": "lots", "REDIS_URL": "http://x", "R8IM_QUEUES": "pubish=1"}, "config")
	if err == nil {
		t.Fatal("worker config accepted a bad configuration")
	}
	for _, want := range []string{"R8IM_CONCURRENCY", "REDIS_URL", "R8IM_QUEUES", "pubish"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %s:\n%v", want, err)
		}
	}
}

func TestHelpListsEnvironmentNames(t *testing.T) {
	out, err := runWorker(t, map[string]string{"COG_TOKEN": "r8_tok3n"}, "--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"REDIS_URL", "R8IM_CONCURRENCY", "R8IM_QUEUES", "R8IM_SHUTDOWN_TIMEOUT", "R8IM_HTTP_ADDR", "COG_TOKEN", "R8IM_S3_PATH_STYLE"} {
		if !strings.Contains(out, want) {
			t.Errorf("--help does not mention %s", want)
		}
	}
	if strings.Contains(out, "r8_tok3n") {
		t.Error("--help shows the token")
	}
}
