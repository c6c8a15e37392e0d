package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestConfigValidatesAndRedacts(t *testing.T) {
	vars := map[string]string{"REDIS_URL": "redis-sentinel://:pw123@s1:26379,s2:26379/0?master=main"}
	root := newRoot(func(k string) (string, bool) { v, ok := vars[k]; return v, ok })
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs([]string{"config"})
	if err := root.Execute(); err != nil {
		t.Fatalf("enqueue config: %v", err)
	}
	if strings.Contains(out.String(), "pw123") || !strings.Contains(out.String(), "s1:26379,s2:26379") {
		t.Fatalf("want the Sentinel URL with its password redacted, got:\n%s", out.String())
	}

	vars["REDIS_URL"] = "redis-sentinel://s1:26379/0" // no master name
	root = newRoot(func(k string) (string, bool) { v, ok := vars[k]; return v, ok })
	root.SetOut(&out)
	root.SetArgs([]string{"config"})
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "master") {
		t.Fatalf("enqueue config with no Sentinel master = %v; want an error asking for ?master=", err)
	}
}
