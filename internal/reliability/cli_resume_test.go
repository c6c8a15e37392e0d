package reliability

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/r8im/r8im/imageops"
	"github.com/r8im/r8im/internal/testenv"
)

// TestR8imKilledAndRunAgainResumes: `r8im affix` SIGKILLed after more than
// half of a chunked layer is committed, then the same command run again,
// continues the upload where the registry has it (the session is in the
// user's cache dir): the registry receives the layer's bytes about once (at
// most 1.1×). On distribution v3 with token auth and TLS, behind a front
// that caps request bodies.
func TestR8imKilledAndRunAgainResumes(t *testing.T) {
	t.Parallel()
	bin := buildCommand(t, "r8im")
	reg := testenv.RegistryV3(t, testenv.WithTLS(), testenv.WithTokenAuth(testenv.User{Name: testenv.TestUser, Password: "pw-resume"}))
	alice := reg.Login(t, testenv.TestUser)
	const chunk, limit = 1 << 20, 1<<20 + 64<<10
	proxy := reg.Proxy(t, testenv.ProxyBodyCap(limit))
	base := strings.Replace(reg.PushBase(t, "base/cli", testenv.OCI).String(), reg.Host, proxy.Host, 1)
	tarPath, files := testenv.WeightsTar(t, testenv.WeightsSpec{Files: 2, FileSize: 12 << 20, Seed: 901})
	dest := proxy.Host + "/" + testenv.TestUser + "/resumed:v1"

	env := append(os.Environ(), alice.Env(t)...)
	env = append(env, "XDG_CACHE_HOME="+t.TempDir(), "R8IM_UPLOAD_CHUNK_SIZE=1MiB")
	args := []string{"affix", "--json", "-q", "--base", base, "--dest", dest, "--tar", tarPath, "--compression", "none", "--created", "2026-11-01T12:00:00Z"}

	proxy.Throttle(4 << 20) // slow enough to kill it in the middle
	first := exec.Command(bin, args...)
	first.Env = env
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	const half = 13 << 20 // of about 24 MiB
	poll(t, time.Minute, func() bool { return proxy.Uploaded() > half },
		func() string { return fmt.Sprintf("only %d bytes uploaded", proxy.Uploaded()) })
	if err := first.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = first.Wait()
	sentBefore := proxy.Uploaded()
	proxy.Throttle(0)

	again := exec.Command(bin, args...)
	again.Env = env
	var stderr strings.Builder
	again.Stderr = &stderr
	out, err := again.Output()
	if err != nil {
		t.Fatalf("the command run again: %v\n%s", err, stderr.String())
	}
	var res imageops.AffixResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("--json: %v\n%s", err, out)
	}
	total := proxy.Uploaded()
	t.Logf("sent %d bytes before the kill, %d in all, for a %d-byte layer; resumed at %d", sentBefore, total, res.Layer.Size, res.Transfer.ResumedBytes)
	if res.Transfer.ResumedBytes < half-chunk || float64(total) > 1.1*float64(res.Layer.Size) {
		t.Errorf("resumed %d bytes, sent %d in all for a %d-byte layer; want the upload resumed and at most 1.1× sent (notes %q)",
			res.Transfer.ResumedBytes, total, res.Layer.Size, res.Transfer.Notes)
	}
	if st := proxy.Stats(); st.LargestBody > limit {
		t.Errorf("the front saw a %d-byte body; its cap is %d", st.LargestBody, limit)
	}
	root := testenv.UnpackWith(t, res.Ref.String(), testenv.UnpackOptions{DockerConfig: alice.DockerConfig(t)})
	for _, f := range files {
		if got := testenv.FileSHA256(t, root+"/src/weights/"+f.Name); got != f.SHA256 {
			t.Fatalf("%s: sha256 %s, want %s", f.Name, got, f.SHA256)
		}
	}
}
