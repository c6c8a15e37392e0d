// Package testenv starts real Redis, distribution registry and MinIO servers
// for tests, builds synthetic base images and weights tarballs, and checks
// pushed images with skopeo and umoci.
//
// Each server runs on a free loopback port in a temporary directory and is
// stopped when the test ends. R8IM_TEST_REDIS_ADDR, R8IM_TEST_REGISTRY and
// R8IM_TEST_S3_ENDPOINT point tests at already running services instead (for
// example the docker-compose stack); those must be dedicated to tests.
//
// A missing binary fails the test with the command that installs it; nothing
// is ever skipped. `make deps` installs everything.
package testenv
