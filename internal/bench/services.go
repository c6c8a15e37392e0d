package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/redis/go-redis/v9"

	"github.com/r8im/r8im/internal/testenv"
)

// proc is a child process in its own process group: stop reaches any
// helpers it forked, and the kernel kills it if the benchmark dies.
type proc struct {
	name   string
	cmd    *exec.Cmd
	log    string
	exited chan struct{}
}

// spawn starts bin with args and env, its output going to a log file in dir.
func spawn(dir, name, bin string, env []string, args ...string) (*proc, error) {
	logPath := filepath.Join(dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(p.exited)
	}()
	return p, nil
}

// stop sends SIGTERM to the group, SIGKILL after 10s, and returns the
// process's peak RSS in bytes (0 if unknown).
func (p *proc) stop() int64 {
	select {
	case <-p.exited:
	default:
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.exited
		}
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	return peakRSS(p.cmd.ProcessState)
}

// peakRSS reads ru_maxrss (KiB on Linux) of a finished process.
func peakRSS(st *os.ProcessState) int64 {
	if st == nil {
		return 0
	}
	if ru, ok := st.SysUsage().(*syscall.Rusage); ok {
		return ru.Maxrss << 10
	}
	return 0
}

func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

// waitReady polls ready until it succeeds, the process exits or 60s pass.
func (p *proc) waitReady(ctx context.Context, ready func(context.Context) error) error {
	deadline := time.Now().Add(60 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited before answering:\n%s", p.name, p.tail())
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err = ready(cctx)
		cancel()
		if err == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready after 60s: %w\n%s", p.name, err, p.tail())
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// services are the real servers the benchmark runs against, on loopback.
type services struct {
	registry, redis, minio *proc
	regHost                string // host:port
	redisAddr              string
	s3                     s3Endpoint
}

type s3Endpoint struct {
	endpoint, accessKey, secretKey, bucket string
}

func (e s3Endpoint) env() []string {
	return []string{
		"AWS_ENDPOINT_URL_S3=" + e.endpoint, "AWS_REGION=us-east-1",
		"AWS_ACCESS_KEY_ID=" + e.accessKey, "AWS_SECRET_ACCESS_KEY=" + e.secretKey,
		"R8IM_S3_PATH_STYLE=true",
	}
}

func (e s3Endpoint) client() *s3.Client {
	return s3.New(s3.Options{
		BaseEndpoint: aws.String(e.endpoint), Region: "us-east-1", UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(e.accessKey, e.secretKey, ""),
	})
}

func (s *services) stop() {
	for _, p := range []*proc{s.registry, s.redis, s.minio} {
		if p != nil {
			p.stop()
		}
	}
}

// startServices starts distribution, redis-server and (when withS3) MinIO
// under dir.
func startServices(ctx context.Context, dir string, withS3 bool) (_ *services, err error) {
	s := &services{}
	defer func() {
		if err != nil {
			s.stop()
		}
	}()

	// Distribution 2.8 with filesystem storage, as the tests run it.
	regBin, err := testenv.FindBinary("docker-registry")
	if err != nil {
		return nil, err
	}
	if s.regHost, err = freeAddr(); err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "registry.yml")
	if err := os.WriteFile(cfg, []byte(testenv.RegistryConfig(filepath.Join(dir, "registry"), s.regHost, "")), 0o600); err != nil {
		return nil, err
	}
	if s.registry, err = spawn(dir, "registry", regBin, nil, "serve", cfg); err != nil {
		return nil, err
	}
	if err := s.registry.waitReady(ctx, func(ctx context.Context) error { return testenv.HTTPOK(ctx, "http://"+s.regHost+"/v2/") }); err != nil {
		return nil, err
	}

	// Redis with AOF on (everysec), as production runs it.
	redisBin, err := testenv.FindBinary("redis-server")
	if err != nil {
		return nil, err
	}
	if s.redisAddr, err = freeAddr(); err != nil {
		return nil, err
	}
	_, port, _ := net.SplitHostPort(s.redisAddr)
	rdir := filepath.Join(dir, "redis")
	if err := os.MkdirAll(rdir, 0o755); err != nil {
		return nil, err
	}
	if s.redis, err = spawn(dir, "redis", redisBin, nil, "--port", port, "--bind", "127.0.0.1", "--dir", rdir,
		"--save", "", "--appendonly", "yes", "--appendfsync", "everysec", "--maxmemory-policy", "noeviction", "--daemonize", "no"); err != nil {
		return nil, err
	}
	if err := s.redis.waitReady(ctx, func(ctx context.Context) error {
		c := redis.NewClient(&redis.Options{Addr: s.redisAddr, MaxRetries: -1})
		defer c.Close()
		return c.Ping(ctx).Err()
	}); err != nil {
		return nil, err
	}

	if !withS3 {
		return s, nil
	}
	minioBin, err := testenv.FindBinary("minio")
	if err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	console, err := freeAddr()
	if err != nil {
		return nil, err
	}
	key := make([]byte, 16)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	s.s3 = s3Endpoint{endpoint: "http://" + addr, accessKey: "r8imbench", secretKey: hex.EncodeToString(key), bucket: "bench"}
	env := []string{"MINIO_ROOT_USER=" + s.s3.accessKey, "MINIO_ROOT_PASSWORD=" + s.s3.secretKey,
		"MINIO_BROWSER=off", "MINIO_UPDATE=off", "MINIO_CI_CD=1"}
	if s.minio, err = spawn(dir, "minio", minioBin, env, "server", "--quiet", "--address", addr, "--console-address", console, filepath.Join(dir, "minio")); err != nil {
		return nil, err
	}
	if err := s.minio.waitReady(ctx, func(ctx context.Context) error { return testenv.HTTPOK(ctx, s.s3.endpoint+"/minio/health/ready") }); err != nil {
		return nil, err
	}
	if _, err := s.s3.client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(s.s3.bucket)}); err != nil {
		return nil, fmt.Errorf("creating the bucket: %w", err)
	}
	return s, nil
}

// putObject uploads a file to the bucket and returns its s3:// URL.
func (s *services) putObject(ctx context.Context, key, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if _, err := s.s3.client().PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(s.s3.bucket), Key: aws.String(key), Body: f}); err != nil {
		return "", fmt.Errorf("putting s3://%s/%s: %w", s.s3.bucket, key, err)
	}
	return "s3://" + s.s3.bucket + "/" + key, nil
}
