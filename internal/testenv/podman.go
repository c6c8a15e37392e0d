package testenv

import (
	"bytes"
	"debug/elf"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// Busybox applets linked in RunnableBase's /bin.
var busyboxApplets = []string{"ash", "cat", "echo", "env", "find", "head", "ls", "sh", "sha256sum",
	"sort", "stat", "tail", "test", "true", "wc", "xargs"}

// RunnableBase is BaseImage for the machine's architecture with a first
// layer holding a static busybox as /bin/busybox and its common applets
// (sh, sha256sum, find, xargs, cat, ls…) as links, so that a container
// runtime can run commands in it. The busybox comes from Debian's
// busybox-static (make deps); a dynamically linked one fails the test.
func RunnableBase(t testing.TB, f Format) v1.Image {
	t.Helper()
	bin := Binary(t, "busybox")
	body, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkStatic(body); err != nil {
		t.Fatalf("%s: %v; RunnableBase needs a static busybox: %s", bin, err, installHint("busybox"))
	}
	entries := []Entry{Dir("bin/"), {Name: "bin/busybox", Body: string(body), Mode: 0o755}}
	for _, a := range busyboxApplets {
		entries = append(entries, Symlink("bin/"+a, "busybox"))
	}
	p := Amd64
	if runtime.GOARCH == "arm64" {
		p = Arm64
	}
	return baseImage(t, f, p, &mutate.Addendum{Layer: LayerOf(t, f, entries...), History: v1.History{
		Created: v1.Time{Time: BaseCreated}, CreatedBy: "ADD busybox-static /bin/ # testenv",
	}})
}

// checkStatic refuses an ELF executable that needs a dynamic loader.
func checkStatic(b []byte) error {
	ef, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return err
	}
	defer ef.Close()
	for _, prog := range ef.Progs {
		if prog.Type == elf.PT_INTERP {
			return errDynamic
		}
	}
	return nil
}

var errDynamic = errors.New("dynamically linked")

// RunOptions tune RunImageWith.
type RunOptions struct {
	// DockerConfig is a directory with a config.json holding credentials
	// for the registry (Login.DockerConfig); "" pulls anonymously.
	DockerConfig string
}

// RunImage pulls ref from a loopback registry with podman and runs cmd in
// it (as the image's entrypoint would be given cmd), returning its stdout.
// A non-zero exit fails the test with the output. See RunImageWith.
func RunImage(t testing.TB, ref string, cmd ...string) string {
	t.Helper()
	return RunImageWith(t, RunOptions{}, ref, cmd...)
}

// RunImageWith is RunImage with credentials. Podman runs as these machines
// allow: storage driver vfs, cgroupfs, runc, no network, and explicit
// ulimits (nofile and nproc 1024; the runtime is refused the defaults),
// with its storage, run and temporary directories in a directory of its
// own, removed when the test ends. TLS is not verified (--tls-verify=false): the registry is a
// loopback test server, HTTP or HTTPS.
func RunImageWith(t testing.TB, o RunOptions, ref string, cmd ...string) string {
	t.Helper()
	podman, runc := Binary(t, "podman"), Binary(t, "runc")
	// Not t.TempDir: podman refuses a runroot path over 50 characters.
	dir, err := os.MkdirTemp("", "r8im-podman-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	tmp := filepath.Join(dir, "tmp")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	global := []string{
		"--root", filepath.Join(dir, "root"), "--runroot", filepath.Join(dir, "run"), "--tmpdir", tmp,
		"--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "file",
		"--runtime", runc, "--log-level", "error",
	}
	env := append(os.Environ(), "TMPDIR="+tmp)
	podmanRun := func(args ...string) (string, error) {
		var stdout, stderr bytes.Buffer
		c := exec.Command(podman, append(global, args...)...)
		c.Env, c.Stdout, c.Stderr = env, &stdout, &stderr
		err := c.Run()
		if err != nil {
			return stdout.String(), &podmanError{args: args, err: err, stderr: stderr.String()}
		}
		return stdout.String(), nil
	}
	// The containers' files (vfs copies every layer) go with dir; this
	// only stops anything a failed run left behind.
	t.Cleanup(func() { _, _ = podmanRun("rm", "--all", "--force", "--time", "0") })
	pull := []string{"pull", "--quiet", "--tls-verify=false"}
	if o.DockerConfig != "" {
		pull = append(pull, "--authfile", filepath.Join(o.DockerConfig, "config.json"))
	}
	if _, err := podmanRun(append(pull, ref)...); err != nil {
		t.Fatal(err)
	}
	run := append([]string{"run", "--rm", "--pull", "never", "--network", "none",
		"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", ref}, cmd...)
	out, err := podmanRun(run...)
	if err != nil {
		t.Fatalf("%v\n--- stdout ---\n%s", err, out)
	}
	return out
}

type podmanError struct {
	args   []string
	err    error
	stderr string
}

func (e *podmanError) Error() string {
	return "podman " + strings.Join(e.args, " ") + ": " + e.err.Error() + "\n" + strings.TrimSpace(e.stderr)
}
