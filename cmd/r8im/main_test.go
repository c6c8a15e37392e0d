package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestHelpAndVersion(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--help"}, []string{"Usage:", "--registry", "--token", "COG_TOKEN", "DOCKER_CONFIG", "--insecure"}},
		{[]string{"--version"}, []string{"r8im version"}},
	} {
		root := newRoot(func(string) (string, bool) { return "", false })
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetArgs(tc.args)
		if err := root.Execute(); err != nil {
			t.Fatalf("r8im %v: %v", tc.args, err)
		}
		for _, w := range tc.want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("r8im %v output lacks %q:\n%s", tc.args, w, out.String())
			}
		}
	}
}
