package testenv

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
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
	bin := Binary(t, "docker-registry")
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	s, port := startServer(t, bin, nil, func(port int) []string {
		cfg := filepath.Join(dir, fmt.Sprintf("config-%d.yml", port))
		if err := os.WriteFile(cfg, []byte(registryConfig(data, port)), 0o600); err != nil {
			t.Fatal(err)
		}
		return []string{"serve", cfg}
	}, func(ctx context.Context, port int) error {
		return httpOK(ctx, "http://"+addr(port)+"/v2/")
	})
	return &RegistryServer{Host: addr(port), DataDir: data, server: s}
}

func registryConfig(dataDir string, port int) string {
	return fmt.Sprintf(`version: 0.1
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
  addr: 127.0.0.1:%d
`, dataDir, port)
}

// httpOK GETs url and wants a 200.
func httpOK(ctx context.Context, url string) error {
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
