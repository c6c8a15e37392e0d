package imageops_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/r8im/r8im/imageops"
	"github.com/r8im/r8im/internal/testenv"
)

// reportSetup is a registry behind a counting proxy, a base seeded in
// base/ (which the test user may only pull) named through the proxy, so
// that base and destination are on one registry and every byte is counted.
type reportSetup struct {
	reg     testenv.RegistryEnv
	proxy   *testenv.Proxy
	base    string
	layers  []string // the base's layer digests
	tarPath string
}

func newReportSetup(t *testing.T, reg testenv.RegistryEnv) reportSetup {
	t.Helper()
	proxy := reg.Proxy(t)
	base := reg.SeedBase(t, "cog", testenv.OCI)
	tarPath, _ := testenv.WeightsTar(t, testenv.WeightsSpec{Files: 2, FileSize: 64 << 10, Seed: 5})
	img, err := remote.Image(base, reg.Admin(t).RemoteOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	mf, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	var layers []string
	for _, l := range mf.Layers {
		layers = append(layers, l.Digest.String())
	}
	return reportSetup{reg: reg, proxy: proxy, base: proxy.Host + "/" + base.RepositoryStr() + "@" + base.DigestStr(), layers: layers, tarPath: tarPath}
}

func (s reportSetup) affix(t *testing.T, dest string, rt http.RoundTripper, opts ...imageops.Option) (*imageops.AffixResult, error) {
	t.Helper()
	if rt == nil {
		rt = s.reg.Transport()
	}
	opts = append([]imageops.Option{imageops.WithTransport(rt), imageops.WithKeychain(s.reg.User.Keychain())}, opts...)
	return imageops.Affix(context.Background(), imageops.AffixRequest{
		Base: s.base, Dest: s.proxy.Host + "/" + dest, Weights: fileOpener(s.tarPath), Created: created,
	}, opts...)
}

// baseBytesMoved is what crossed the proxy of the base's layers.
func (s reportSetup) baseBytesMoved(t *testing.T) int64 {
	t.Helper()
	var n int64
	for _, l := range s.layers {
		n += s.proxy.Downloaded(l) + s.proxy.Blobs()[l]
	}
	return n
}

func TestMountFromAPullOnlyBaseMovesNoBaseByte(t *testing.T) {
	for _, rc := range testenv.Registries(t) {
		t.Run(rc.Name, func(t *testing.T) {
			s := newReportSetup(t, rc.Start(t))
			res, err := s.affix(t, testenv.TestUser+"/model:v1", nil, imageops.WithRequireMount(true))
			if err != nil {
				t.Fatal(err)
			}
			if res.Transfer.MountedBlobs == 0 || res.Transfer.MountedBytes == 0 || res.Transfer.RefusedMounts != 0 {
				t.Fatalf("transfer %+v: want every base layer mounted, none refused", res.Transfer)
			}
			if n := s.baseBytesMoved(t); n != 0 {
				t.Fatalf("%d base layer bytes crossed the proxy, want 0", n)
			}
		})
	}
}

// withoutPullOn makes the token requests that ask to push leave out pull on
// repo: the token then lacks it, as when a registry's issuer grants pull on
// a repository for reading but not for mounting. Resolving the base (a
// token request for pull only) is untouched.
func withoutPullOn(rt http.RoundTripper, repo string) http.RoundTripper {
	strip := func(scopes []string) []string {
		var keep []string
		for _, sc := range strings.Fields(strings.Join(scopes, " ")) {
			if sc != "repository:"+repo+":pull" {
				keep = append(keep, sc)
			}
		}
		return keep
	}
	return roundTripper(func(r *http.Request) (*http.Response, error) {
		if r.URL.Path != testenv.TokenPath {
			return rt.RoundTrip(r)
		}
		r = r.Clone(r.Context())
		if r.Method == http.MethodPost { // OAuth2 form: scope is one space-separated field
			body, err := io.ReadAll(r.Body)
			if err != nil {
				return nil, err
			}
			form, err := url.ParseQuery(string(body))
			if err != nil {
				return nil, err
			}
			if strings.Contains(form.Get("scope"), "push") {
				form.Set("scope", strings.Join(strip(form["scope"]), " "))
			}
			enc := form.Encode()
			r.Body, r.ContentLength = io.NopCloser(strings.NewReader(enc)), int64(len(enc))
			return rt.RoundTrip(r)
		}
		q := r.URL.Query()
		if strings.Contains(strings.Join(q["scope"], " "), "push") {
			q["scope"] = strip(q["scope"])
			r.URL.RawQuery = q.Encode()
		}
		return rt.RoundTrip(r)
	})
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestRefusedMount runs on the token registry only: the open 2.8 registry
// mounts from any repository (TestMountFromAPullOnlyBaseMovesNoBaseByte).
func TestRefusedMount(t *testing.T) {
	reg := testenv.RegistryV3(t, testenv.WithTLS(), testenv.WithTokenAuth(testenv.User{Name: testenv.TestUser, Password: "pw-refused"}))
	s := newReportSetup(t, testenv.RegistryEnv{RegistryServer: reg, User: reg.Login(t, testenv.TestUser)})
	rt := withoutPullOn(reg.Transport(), "base/cog")

	t.Run("reported", func(t *testing.T) {
		res, err := s.affix(t, testenv.TestUser+"/copied:v1", rt)
		if err != nil {
			t.Fatal(err)
		}
		tr := res.Transfer
		if tr.RefusedMounts == 0 || tr.RefusedMountBytes == 0 || tr.MountedBlobs != 0 || tr.DownloadedBytes < tr.RefusedMountBytes {
			t.Fatalf("transfer %+v: want the refused mounts counted and their bytes copied", tr)
		}
		if !hasNote(tr, "refused to mount") || !hasNote(tr, "base/cog") {
			t.Fatalf("notes %q: want the refused mount from base/cog", tr.Notes)
		}
	})
	t.Run("require-mount", func(t *testing.T) {
		s.proxy.Reset()
		_, err := s.affix(t, testenv.TestUser+"/strict:v1", rt, imageops.WithRequireMount(true))
		var mr *imageops.MountRefusedError
		if !errors.As(err, &mr) || !imageops.IsPermanent(err) || !strings.Contains(err.Error(), "base/cog") {
			t.Fatalf("err = %v: want a permanent MountRefusedError naming base/cog", err)
		}
		if n := s.baseBytesMoved(t); n != 0 {
			t.Fatalf("%d base layer bytes crossed the proxy, want 0", n)
		}
	})
}

func TestPushWithoutPermissionNamesRepositoryAndAction(t *testing.T) {
	reg := testenv.RegistryV3(t, testenv.WithTLS(), testenv.WithTokenAuth(testenv.User{Name: testenv.TestUser, Password: "pw-denied"}))
	s := newReportSetup(t, testenv.RegistryEnv{RegistryServer: reg, User: reg.Login(t, testenv.TestUser)})
	_, err := s.affix(t, "base/mine:v1", nil)
	if !errors.Is(err, imageops.ErrUnauthorized) || !imageops.IsPermanent(err) {
		t.Fatalf("err = %v: want a permanent ErrUnauthorized", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "push on repository base/mine") {
		t.Fatalf("err = %v: want the refused action and repository named", err)
	}
}

func TestCrossRegistryCopy(t *testing.T) {
	reg := testenv.Registry(t)
	other := testenv.Registry(t)
	base := reg.PushBase(t, "base/cog", testenv.OCI)
	tarPath, _ := testenv.WeightsTar(t, testenv.WeightsSpec{Files: 1, FileSize: 1 << 10, Seed: 6})
	affix := func(opts ...imageops.Option) (*imageops.AffixResult, error) {
		return imageops.Affix(context.Background(), imageops.AffixRequest{Base: base.String(), Dest: other.Host + "/alice/copy",
			Weights: fileOpener(tarPath), Created: created}, opts...)
	}
	res, err := affix()
	if err != nil {
		t.Fatal(err)
	}
	if !res.CrossRegistry || !hasNote(res.Transfer, "another registry") || !hasNote(res.Transfer, "no tag") {
		t.Fatalf("result %+v: want the cross-registry copy and the missing tag noted", res)
	}
	_, err = affix(imageops.WithRequireMount(true))
	var mr *imageops.MountRefusedError
	if !errors.As(err, &mr) || !imageops.IsPermanent(err) || !strings.Contains(err.Error(), reg.Host+"/base/cog") {
		t.Fatalf("err = %v: want a permanent MountRefusedError naming the base repository", err)
	}
}

func TestExactPlatformRefusesAnotherSinglePlatformBase(t *testing.T) {
	for _, rc := range testenv.Registries(t) {
		t.Run(rc.Name, func(t *testing.T) {
			s := newReportSetup(t, rc.Start(t))
			arm := &v1.Platform{OS: "linux", Architecture: "arm64"}
			_, err := s.affix(t, testenv.TestUser+"/arm:v1", nil, imageops.WithExactPlatform(arm))
			if !errors.Is(err, imageops.ErrInvalid) || !strings.Contains(err.Error(), "single-platform linux/amd64") {
				t.Fatalf("err = %v: want ErrInvalid naming the base's platform", err)
			}
			if _, err := s.affix(t, testenv.TestUser+"/arm:v1", nil, imageops.WithPlatform(arm)); err != nil {
				t.Fatalf("WithPlatform (not chosen by the user) takes a single-platform base as it is: %v", err)
			}
		})
	}
}
