package testenv

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// RegistryServer is a running distribution registry speaking plain HTTP on
// loopback (go-containerregistry uses HTTP for 127.0.0.1 on its own).
type RegistryServer struct {
	Host    string // host:port, the registry part of image references
	DataDir string // filesystem storage root ("" for an external registry)
	*server
}

// Registry starts Debian's docker-registry (distribution 2.8) with filesystem
// storage and deletes enabled, or returns the one at R8IM_TEST_REGISTRY.
func Registry(t testing.TB) *RegistryServer {
	t.Helper()
	if h := os.Getenv("R8IM_TEST_REGISTRY"); h != "" {
		return &RegistryServer{Host: h}
	}
	return startRegistry(t, "")
}

// AuthRegistry starts a registry that requires basic auth (htpasswd) for
// user with password. It is always a local server: tests of authentication
// need to control the credentials.
func AuthRegistry(t testing.TB, user, password string) *RegistryServer {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	htpasswd := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(htpasswd, []byte(user+":"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return startRegistry(t, htpasswd)
}

func startRegistry(t testing.TB, htpasswd string) *RegistryServer {
	t.Helper()
	bin := Binary(t, "docker-registry")
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	s, port := startServer(t, bin, nil, func(port int) []string {
		cfg := filepath.Join(dir, fmt.Sprintf("config-%d.yml", port))
		if err := os.WriteFile(cfg, []byte(RegistryConfig(data, addr(port), htpasswd)), 0o600); err != nil {
			t.Fatal(err)
		}
		return []string{"serve", cfg}
	}, func(ctx context.Context, port int) error {
		err := HTTPOK(ctx, "http://"+addr(port)+"/v2/")
		if htpasswd != "" && err != nil && strings.Contains(err.Error(), "401") {
			return nil // up, and asking for credentials
		}
		return err
	})
	return &RegistryServer{Host: addr(port), DataDir: data, server: s}
}

// RegistryConfig is the distribution configuration the tests (and make
// bench) run: filesystem storage under dataDir, listening on addr, with
// htpasswd basic auth when htpasswd names a file.
func RegistryConfig(dataDir, addr, htpasswd string) string {
	auth := ""
	if htpasswd != "" {
		auth = fmt.Sprintf("auth:\n  htpasswd:\n    realm: r8im-test\n    path: %s\n", htpasswd)
	}
	return auth + fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
`, dataDir, addr)
}

// HTTPOK GETs url and wants a 200.
func HTTPOK(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}
