// Package testenv starts real Redis, distribution registries (2.8 and v3,
// with TLS and token auth), MinIO and podman for tests, builds synthetic
// base images and weights tarballs, checks pushed images with skopeo and
// umoci, and fronts registries with a counting, fault-injecting proxy.
//
// Each server runs on a free loopback port in a temporary directory and is
// stopped when the test ends. R8IM_TEST_REDIS_ADDR, R8IM_TEST_REGISTRY and
// R8IM_TEST_S3_ENDPOINT point tests at already running services instead (for
// example the docker-compose stack); those must be dedicated to tests.
//
// A missing binary fails the test with the command that installs it; nothing
// is ever skipped. `make deps` installs everything.
//
// Each Redis(t) is a database of the test's own, so tests may count keys:
// DB 1 of a server of its own, or, on the shared R8IM_TEST_REDIS_ADDR, a
// database from 1 up leased to the test alone (a SETNX key in DB 0 naming
// host, pid and test; a dead process's lease is taken over), flushed when
// leased and at test end. URL, Client and Options carry the DB.
//
// # Tarballs
//
// Tar(t, entries...) builds every test tarball (WriteTar streams one, and
// returns archive/tar's refusal instead of failing): File, Dir, Symlink,
// Hardlink, Whiteout, Opaque, or an Entry spelled out — owners, devices,
// PAX records, format, hostile names — and PAXSparse for what archive/tar
// will not write. TarMembers(t, r) (ReadTar: the error instead) reads one
// back as headers and bodies. WriteWeights streams weight-like shards of
// any size; TarDir tars a directory with GNU tar.
//
// # Registries as in production
//
// Registry starts Debian's distribution 2.8 (plain HTTP, open). RegistryV3
// starts distribution v3 (BinDir/registry), optionally WithTLS (a
// certificate from TestCA, the CA made once per test process) and
// WithTokenAuth(users...) (a Docker token issuer on the registry's own
// host: each user pushes and pulls user/..., only pulls base/...; AdminUser
// may do everything; anonymous gets nothing; a wrong password is 401 at the
// realm; an ungranted scope is left out of the token, so the registry
// answers 401 error="insufficient_scope").
//
// A Login is one user of one registry in every form a client takes:
//
//	alice := reg.Login(t, "alice")
//	alice.RemoteOptions()   // go-containerregistry: transport trusting the CA + keychain
//	alice.Keychain()        // authn.Keychain (the registry's host and its proxies)
//	reg.Transport()         // http.RoundTripper trusting the CA (imageops.WithTransport)
//	alice.DockerConfig(t)   // DOCKER_CONFIG dir; config.json is skopeo's and podman's --authfile
//	alice.Env(t)            // DOCKER_CONFIG, SSL_CERT_FILE, SSL_CERT_DIR for a CLI subprocess
//	reg.PushBase(t, "base/cog", testenv.OCI) // seeded as the admin
//	reg.TokenRequests()     // what clients asked the issuer for, and were granted
//
// Registries(t) is the table that tests touching a registry run over:
// "distribution-2.8" and "v3-token-tls", each started lazily by Start(t)
// inside the subtest, with the user TestUser ("alice") and SeedBase for
// base/ images. R8IM_TEST_REGISTRIES=v3-token-tls runs a subset.
// TestPushReturnsDigestReference shows the pattern.
//
// # The proxy: real fronts
//
// CountingProxy (or reg.Proxy, which also fronts TLS and token-auth
// registries, rewriting Location and the token realm so that every request
// crosses it) counts blob bytes exactly (Uploaded, Downloaded, Blobs:
// every body byte a client sent, refused or dropped ones included),
// injects faults (Inject, SetFaultFunc), and behaves like production
// fronts on request:
//
//	ProxyBodyCap(n)        413 to a body over n bytes (Stats: LargestBody, TooLarge)
//	ProxyConnBandwidth(r)  a token bucket of r bytes/s per client connection
//	ProxyRefuseChunks()    416 to a PATCH with Content-Range or a second PATCH per session
//	ProxyDropPatchAfter(n) drop the first PATCH past n bytes, forwarding none of it (once)
//	ProxyCutPatchAfter(n)  forward its first n bytes as a whole request, lose the answer (once)
//
// Each has a setter of the same name to change it while a test runs.
//
// # Waiting
//
// Eventually(t, timeout, what, cond) polls cond until it holds and fails
// with what, the timeout and cond's last state otherwise: the one way tests
// wait for another goroutine or process (a record's state, a metric, a
// file). Tests do not sleep to synchronise.
//
// # Running images
//
// RunImage(t, ref, cmd...) pulls ref with podman (vfs, cgroupfs, runc, no
// network, explicit ulimits) into a private store and returns the
// command's stdout. RunnableBase is BaseImage with a static busybox (sh,
// sha256sum, find, xargs…) as its first layer, so affixed images can be
// checked from inside.
package testenv
