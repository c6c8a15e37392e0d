package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// MinIOVersion is the pinned, known-good MinIO build used by tests.
const MinIOVersion = "v0.0.0-20260212201848-7aac2a2c5b7c"

// installHint says how to get each binary the tests run.
func installHint(name string) string {
	switch name {
	case "minio":
		return "make deps   (or: GOBIN=" + BinDir() + " go install github.com/minio/minio@" + MinIOVersion + ")"
	case "registry":
		return "make deps   (or: GOBIN=" + BinDir() + " go install github.com/distribution/distribution/v3/cmd/registry@" + RegistryV3Version + ")"
	case "redis-server", "docker-registry", "skopeo", "umoci", "podman", "runc", "tar":
		return "make deps   (or: apt-get install -y " + name + ")"
	case "busybox":
		return "make deps   (or: apt-get install -y busybox-static)"
	}
	return "install " + name
}

// BinDir is where `make deps` puts binaries built with go install (MinIO,
// distribution v3's registry):
// $R8IM_BIN_DIR, else ~/.cache/r8im/bin.
func BinDir() string {
	if d := os.Getenv("R8IM_BIN_DIR"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "r8im-bin")
	}
	return filepath.Join(home, ".cache", "r8im", "bin")
}

// FindBinary looks for a tool in BinDir, then PATH. The error carries the
// install command.
func FindBinary(name string) (string, error) {
	if p := filepath.Join(BinDir(), name); isExecutable(p) {
		return p, nil
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%s is not installed (looked in %s and PATH); install it with: %s", name, BinDir(), installHint(name))
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// Binary returns the path of a required tool or fails the test with the
// command that installs it.
func Binary(t testing.TB, name string) string {
	t.Helper()
	p, err := FindBinary(name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// freePort reserves a loopback port and releases it for a server to take.
// Another process may grab it in between; start retries on a new port.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// server is a child process that test cleanup stops.
type server struct {
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
}

// PID is the server's process id (tests use it to prove nothing is left behind).
func (s *server) PID() int { return s.cmd.Process.Pid }

// logTail returns the end of the server's output for failure messages.
func (s *server) logTail() string {
	b, _ := os.ReadFile(s.logPath)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return strings.TrimSpace(string(b))
}

// startServer runs bin with args built for a fresh port, waits until ready
// says the server answers, and registers a cleanup that stops it. If the
// server exits early (usually because the port was taken) it retries on
// another port.
func startServer(t testing.TB, bin string, env []string, args func(port int) []string, ready func(ctx context.Context, port int) error) (*server, int) {
	t.Helper()
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port := freePort(t)
		s, err := spawn(t, bin, env, args(port))
		if err != nil {
			t.Fatal(err)
		}
		if err = s.waitReady(port, ready); err == nil {
			return s, port
		}
		lastErr = fmt.Errorf("%w\n--- %s output ---\n%s", err, filepath.Base(bin), s.logTail())
		s.stop()
	}
	t.Fatalf("starting %s: %v", filepath.Base(bin), lastErr)
	return nil, 0
}

func spawn(t testing.TB, bin string, env []string, args []string) (*server, error) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "server.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group so cleanup reaches any children; SIGKILL if the test
	// binary dies without running cleanups (timeout panic, Ctrl-C).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("running %s: %w", bin, err)
	}
	s := &server{cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(s.exited)
	}()
	t.Cleanup(s.stop)
	return s, nil
}

func (s *server) waitReady(port int, ready func(ctx context.Context, port int) error) error {
	deadline := time.Now().Add(60 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		select {
		case <-s.exited:
			return fmt.Errorf("exited before answering: %v", s.cmd.ProcessState)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err = ready(ctx, port)
		cancel()
		if err == nil {
			// Another test's server may hold the port (freePort closes its
			// listener before the child binds): then what answered was that
			// one, and this one exits at once, unable to bind. Give it a
			// moment to do so before calling it ready.
			select {
			case <-s.exited:
				return fmt.Errorf("exited after the port answered (another server holds it?): %v", s.cmd.ProcessState)
			case <-time.After(300 * time.Millisecond):
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("not ready after 60s: %w", err)
}

// stop sends SIGTERM to the process group, then SIGKILL after 10s. It is
// safe to call more than once.
func (s *server) stop() {
	select {
	case <-s.exited:
		return
	default:
	}
	pgid := -s.cmd.Process.Pid
	_ = syscall.Kill(pgid, syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(pgid, syscall.SIGKILL)
		<-s.exited
	}
	// A server that forked helpers: make sure none outlive the leader.
	_ = syscall.Kill(pgid, syscall.SIGKILL)
}

// Kill stops the server at once with SIGKILL (for fault tests).
func (s *server) Kill() error {
	if err := syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	<-s.exited
	return nil
}

func addr(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }
