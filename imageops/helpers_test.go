package imageops_test

import (
	"maps"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/r8im/r8im/imageops"
	"github.com/r8im/r8im/internal/testenv"
)

// writeTar writes a tar of regular files (sorted by name) to path.
func writeTar(t *testing.T, path string, files map[string]string) {
	t.Helper()
	var entries []testenv.Entry
	for _, n := range slices.Sorted(maps.Keys(files)) {
		entries = append(entries, testenv.File(n, files[n]))
	}
	if err := os.WriteFile(path, testenv.Tar(t, entries...), 0o644); err != nil {
		t.Fatal(err)
	}
}

// regSetup is one registry of testenv.Registries as the test user
// (testenv.TestUser) sees it: destinations under <host>/alice/..., bases
// under base/... seeded by the admin, every read and write with the user's
// transport and keychain (which also cover the registry's proxies).
type regSetup struct {
	testenv.RegistryEnv
}

// forEachReg runs f in a subtest for each registry of testenv.Registries:
// distribution 2.8 (open, plain HTTP) and v3 with token auth and TLS.
func forEachReg(t *testing.T, f func(t *testing.T, r regSetup)) {
	t.Helper()
	for _, rc := range testenv.Registries(t) {
		t.Run(rc.Name, func(t *testing.T) { f(t, regSetup{rc.Start(t)}) })
	}
}

// opts are the imageops options that reach the registry as the user,
// followed by extra.
func (r regSetup) opts(extra ...imageops.Option) []imageops.Option {
	return append([]imageops.Option{imageops.WithTransport(r.Transport()), imageops.WithKeychain(r.User.Keychain())}, extra...)
}

// repo is host/alice/name: a repository the user may push to, on the
// registry's host or one of its proxies' hosts.
func (r regSetup) repo(host, name string) string { return host + "/" + r.User.User + "/" + name }

// via is ref (on the registry or any of its proxies) with its host
// replaced by host.
func (r regSetup) via(host, ref string) string {
	i := strings.IndexByte(ref, '/')
	return host + ref[i:]
}

// push writes an image or index as the user to host/alice/repoTag.
func (r regSetup) push(t *testing.T, host, repoTag string, a remote.Taggable) name.Digest {
	t.Helper()
	return testenv.PushWith(t, r.repo(host, repoTag), a, r.User.RemoteOptions()...)
}

// image reads ref as the user (the platform's image of an index).
func (r regSetup) image(t *testing.T, ref string, p v1.Platform) v1.Image {
	t.Helper()
	rr, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(rr, append(r.User.RemoteOptions(), remote.WithPlatform(p))...)
	if err != nil {
		t.Fatalf("reading %s for %s: %v", ref, p, err)
	}
	return img
}

// head asks for ref as the user; nil means it exists.
func (r regSetup) head(t *testing.T, ref string) error {
	t.Helper()
	rr, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	_, err = remote.Head(rr, r.User.RemoteOptions()...)
	return err
}

// unpack checks ref the way another client would (skopeo + umoci, as the
// user) and returns the root filesystem.
func (r regSetup) unpack(t *testing.T, ref string, p *v1.Platform) string {
	t.Helper()
	return testenv.UnpackWith(t, ref, testenv.UnpackOptions{Platform: p, DockerConfig: r.User.DockerConfig(t)})
}
