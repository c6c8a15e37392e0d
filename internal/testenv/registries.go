package testenv

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// TestUser is the user a RegistryEnv acts as: on a token-auth registry it
// may push and pull TestUser/... and only pull base/....
const TestUser = "alice"

// RegistryCase is one kind of registry a table test runs against.
type RegistryCase struct {
	Name  string // Distribution28, or "v3-token-tls"
	Start func(t testing.TB) RegistryEnv
}

// RegistryEnv is a started registry and the user a test acts as.
type RegistryEnv struct {
	*RegistryServer
	// User is TestUser: anonymous on an open registry, with credentials
	// (User.Keychain, User.DockerConfig, User.Env) on a token-auth one.
	User Login
}

// SeedBase pushes BaseImage (or BaseIndex for several platforms) to
// base/<repo>:latest as the admin and returns its digest reference, which
// User may pull but not push to.
func (e RegistryEnv) SeedBase(t testing.TB, repo string, f Format, platforms ...v1.Platform) name.Digest {
	t.Helper()
	return e.PushBase(t, BaseNamespace+"/"+repo, f, platforms...)
}

// Registries lists the registries that tests touching a registry run
// against, as production has them:
//
//   - "distribution-2.8": Debian's docker-registry, plain HTTP, open to
//     anyone (or R8IM_TEST_REGISTRY);
//   - "v3-token-tls": distribution v3 over HTTPS (the test CA) with token
//     auth: TestUser pushes to alice/..., pulls base/....
//
// Each case starts its registry only when Start is called, inside the
// subtest. R8IM_TEST_REGISTRIES (comma-separated names) runs a subset;
// an unknown name fails the test.
//
//	for _, rc := range testenv.Registries(t) {
//		t.Run(rc.Name, func(t *testing.T) {
//			reg := rc.Start(t)
//			base := reg.SeedBase(t, "cog", testenv.OCI)
//			dst := reg.User.Repo("model:v1") // host/alice/model:v1
//			opts := reg.User.RemoteOptions() // transport + keychain
//			...
//		})
//	}
func Registries(t testing.TB) []RegistryCase {
	t.Helper()
	all := []RegistryCase{
		{Name: Distribution28, Start: func(t testing.TB) RegistryEnv {
			t.Helper()
			r := Registry(t)
			return RegistryEnv{RegistryServer: r, User: r.Login(t, TestUser)}
		}},
		{Name: "v3-token-tls", Start: func(t testing.TB) RegistryEnv {
			t.Helper()
			r := RegistryV3(t, WithTLS(), WithTokenAuth(User{Name: TestUser, Password: "pw-" + randomHex(t, 8)}))
			return RegistryEnv{RegistryServer: r, User: r.Login(t, TestUser)}
		}},
	}
	only := os.Getenv("R8IM_TEST_REGISTRIES")
	if only == "" {
		return all
	}
	names := strings.Split(only, ",")
	for _, n := range names {
		if !slices.ContainsFunc(all, func(c RegistryCase) bool { return c.Name == n }) {
			t.Fatalf("R8IM_TEST_REGISTRIES names %q; known registries: %s, v3-token-tls", n, Distribution28)
		}
	}
	return slices.DeleteFunc(all, func(c RegistryCase) bool { return !slices.Contains(names, c.Name) })
}
