package testenv

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Unpack proves that other tools can read an image: skopeo copies ref from
// the registry into an OCI layout and umoci unpacks it. It returns the
// unpacked root filesystem. For an index, platform picks the image
// (nil means linux/amd64).
func Unpack(t testing.TB, ref string, platform *v1.Platform) string {
	t.Helper()
	return UnpackWith(t, ref, UnpackOptions{Platform: platform})
}

// UnpackOptions tune UnpackWith.
type UnpackOptions struct {
	Platform *v1.Platform // for an index; nil means linux/amd64
	// DockerConfig is a directory holding a docker config.json with the
	// registry's credentials (skopeo reads it with --src-authfile); ""
	// means the default keychain.
	DockerConfig string
}

// UnpackWith is Unpack with credentials for an authenticated registry.
func UnpackWith(t testing.TB, ref string, o UnpackOptions) string {
	t.Helper()
	platform := o.Platform
	skopeo, umoci := Binary(t, "skopeo"), Binary(t, "umoci")
	dir := t.TempDir()
	layout := filepath.Join(dir, "layout")
	args := []string{"--insecure-policy"}
	if platform != nil {
		args = append(args, "--override-os", platform.OS, "--override-arch", platform.Architecture)
		if platform.Variant != "" {
			args = append(args, "--override-variant", platform.Variant)
		}
	}
	args = append(args, "copy", "--src-tls-verify=false")
	var kc authn.Keychain = authn.DefaultKeychain
	if o.DockerConfig != "" {
		args = append(args, "--src-authfile", filepath.Join(o.DockerConfig, "config.json"))
		kc = dirKeychain(o.DockerConfig)
	}
	if hasZstdLayers(t, ref, platform, kc) {
		// Debian's umoci 0.4.7 predates zstd layers: skopeo, which reads
		// them and checks their digests, hands umoci gzip instead.
		args = append(args, "--dest-compress", "--dest-compress-format", "gzip")
	}
	args = append(args, "docker://"+ref, "oci:"+layout+":img")
	run(t, skopeo, args...)
	bundle := filepath.Join(dir, "bundle")
	uargs := []string{"unpack", "--image", layout + ":img", bundle}
	if os.Geteuid() != 0 {
		uargs = append([]string{"unpack", "--rootless"}, uargs[1:]...)
	}
	run(t, umoci, uargs...)
	return filepath.Join(bundle, "rootfs")
}

// hasZstdLayers reports whether the image ref (or its platform's image)
// has a zstd layer.
func hasZstdLayers(t testing.TB, ref string, platform *v1.Platform, kc authn.Keychain) bool {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	p := v1.Platform{OS: "linux", Architecture: "amd64"}
	if platform != nil {
		p = *platform
	}
	img, err := remote.Image(r, remote.WithPlatform(p), remote.WithAuthFromKeychain(kc), remote.WithTransport(TestCA(t).Transport()))
	if err != nil {
		t.Fatalf("reading %s: %v", ref, err)
	}
	mf, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range mf.Layers {
		if l.MediaType == types.OCILayerZStd {
			return true
		}
	}
	return false
}

func run(t testing.TB, bin string, args ...string) {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %v: %v\n%s", filepath.Base(bin), args, err, out.String())
	}
}

// FileSHA256 returns the hex sha256 of a file, failing the test if it is
// missing.
func FileSHA256(t testing.TB, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatalf("opening %s: %v", p, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// dirKeychain reads credentials from the config.json in dir.
type dirKeychain string

func (d dirKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	b, err := os.ReadFile(filepath.Join(string(d), "config.json"))
	if err != nil {
		return nil, err
	}
	var cf struct {
		Auths map[string]authn.AuthConfig `json:"auths"`
	}
	if err := json.Unmarshal(b, &cf); err != nil {
		return nil, fmt.Errorf("reading %s/config.json: %w", d, err)
	}
	ac, ok := cf.Auths[r.RegistryStr()]
	if !ok {
		return authn.Anonymous, nil
	}
	return authn.FromConfig(ac), nil
}

// WriteDockerConfig writes a docker config.json holding user and password
// for host into a new directory and returns the directory (DOCKER_CONFIG).
func WriteDockerConfig(t testing.TB, host, user, password string) string {
	t.Helper()
	dir := t.TempDir()
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + password))
	body := `{"auths": {"` + host + `": {"auth": "` + auth + `"}}}`
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}
