package testenv_test

import (
	"crypto/sha256"
	"fmt"
	"strings"
	"testing"

	"github.com/r8im/r8im/internal/testenv"
)

// RunnableBase runs under podman, pulled from each kind of registry (with
// the user's credentials where it needs them): its busybox shell hashes
// the image's /src/predict.py.
func TestRunImage(t *testing.T) {
	for _, rc := range testenv.Registries(t) {
		t.Run(rc.Name, func(t *testing.T) {
			reg := rc.Start(t)
			dig := reg.Push(t, testenv.BaseNamespace+"/runnable:latest", testenv.RunnableBase(t, testenv.OCI))
			out := testenv.RunImageWith(t, testenv.RunOptions{DockerConfig: reg.User.DockerConfig(t)}, dig.String(),
				"sh", "-c", "cd /src && sha256sum predict.py")
			want := fmt.Sprintf("%x  predict.py", sha256.Sum256([]byte(testenv.Predict)))
			if strings.TrimSpace(out) != want {
				t.Fatalf("sha256sum in the container printed %q; want %q", out, want)
			}
		})
	}
}
