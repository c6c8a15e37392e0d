package testenv

import (
	"os"
	"strings"
	"testing"
)

// A missing binary must produce the command that installs it (tests then
// fail with it rather than skip).
func TestMissingBinaryNamesInstallCommand(t *testing.T) {
	t.Setenv("R8IM_BIN_DIR", t.TempDir())
	t.Setenv("PATH", t.TempDir())
	for bin, want := range map[string]string{
		"redis-server":    "apt-get install -y redis-server",
		"docker-registry": "apt-get install -y docker-registry",
		"minio":           "go install github.com/minio/minio@" + MinIOVersion,
	} {
		_, err := FindBinary(bin)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "make deps") {
			t.Errorf("FindBinary(%q) = %v; want an error naming %q", bin, err, want)
		}
	}
}

// make deps installs the MinIO that the failure message tells people to
// install; the two pins must not drift apart.
func TestMakefilePinsTheSameMinIO(t *testing.T) {
	mk, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(mk), "MINIO_VERSION := "+MinIOVersion+"\n") {
		t.Fatalf("Makefile's MINIO_VERSION differs from testenv.MinIOVersion (%s)", MinIOVersion)
	}
}
