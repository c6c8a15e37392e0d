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
		"registry":        "go install github.com/distribution/distribution/v3/cmd/registry@" + RegistryV3Version,
		"podman":          "apt-get install -y podman",
		"runc":            "apt-get install -y runc",
		"busybox":         "apt-get install -y busybox-static",
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

// make deps installs the distribution v3 that the failure message names.
func TestMakefilePinsTheSameRegistryV3(t *testing.T) {
	mk, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(mk), "REGISTRY_V3_VERSION := "+RegistryV3Version+"\n") {
		t.Fatalf("Makefile's REGISTRY_V3_VERSION differs from testenv.RegistryV3Version (%s)", RegistryV3Version)
	}
}
