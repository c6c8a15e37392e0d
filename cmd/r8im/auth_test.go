package main

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/r8im/r8im/internal/testenv"
)

// dockerConfig writes a docker config.json holding auths and returns its
// directory.
func dockerConfig(t *testing.T, auths map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	var parts []string
	for host, userpass := range auths {
		parts = append(parts, `"`+host+`": {"auth": "`+base64.StdEncoding.EncodeToString([]byte(userpass))+`"}`)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"auths": {`+strings.Join(parts, ",")+`}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestRegistryAuthentication pushes to a registry that requires basic auth,
// with credentials from a docker config and from a cog token exchanged at
// /cog/v1/verify-token on the registry's host (as r8.im does).
func TestRegistryAuthentication(t *testing.T) {
	const user, token = "alice", "r8_3d9f0c1b7e"
	reg := testenv.AuthRegistry(t, user, token)
	proxy := testenv.CountingProxy(t, reg.Host)
	proxy.AcceptCogToken(token, user)
	tarPath, _ := testenv.WeightsTar(t, testenv.WeightsSpec{Seed: 51})

	withCreds := dockerConfig(t, map[string]string{proxy.Host: user + ":" + token})
	t.Setenv("DOCKER_CONFIG", withCreds)
	base := testenv.PushBase(t, proxy.Host, "base/private", testenv.OCI)

	t.Run("docker config", func(t *testing.T) {
		stdout, stderr, err := r8im(t, nil, "affix", "--docker-config", withCreds, "--base", base.String(), "--dest", proxy.Host+"/models/dc", "--tar", tarPath)
		if err != nil {
			t.Fatalf("affix with docker config credentials: %v\n%s", err, stderr)
		}
		if !strings.HasPrefix(stdout, proxy.Host+"/models/dc@sha256:") {
			t.Fatalf("stdout %q", stdout)
		}
	})

	empty := dockerConfig(t, nil)
	t.Run("cog token", func(t *testing.T) {
		t.Setenv("DOCKER_CONFIG", empty)
		// No registry host in --dest: it goes to --registry.
		stdout, stderr, err := r8im(t, nil, "affix", "-t", token, "-r", proxy.Host, "--base", base.String(), "--dest", "models/cog:v1", "--tar", tarPath)
		if err != nil {
			t.Fatalf("affix with a cog token: %v\n%s", err, stderr)
		}
		if !strings.HasPrefix(stdout, proxy.Host+"/models/cog@sha256:") {
			t.Fatalf("stdout %q; want the image in the --registry host", stdout)
		}
		if strings.Contains(stdout+stderr, token) {
			t.Fatal("the token appears in the output")
		}
	})

	t.Run("rejected token", func(t *testing.T) {
		t.Setenv("DOCKER_CONFIG", empty)
		_, _, err := r8im(t, nil, "affix", "-t", "r8_wrong", "-r", proxy.Host, "--base", base.String(), "--dest", "models/no", "--tar", tarPath)
		if err == nil || !strings.Contains(err.Error(), "rejected the cog token") || !strings.Contains(err.Error(), "replicate.com/auth/token") {
			t.Fatalf("affix with a wrong token = %v; want a clear rejection saying where to get a token", err)
		}
		if strings.Contains(err.Error(), "r8_wrong") {
			t.Fatal("the error shows the token")
		}
	})

	t.Run("no credentials", func(t *testing.T) {
		t.Setenv("DOCKER_CONFIG", empty)
		_, _, err := r8im(t, nil, "layers", base.String())
		if err == nil || !strings.Contains(err.Error(), "unauthorized") || !strings.Contains(err.Error(), "docker login") {
			t.Fatalf("layers without credentials = %v; want unauthorized with a hint", err)
		}
	})
}
