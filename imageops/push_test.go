package imageops_test

import (
	"context"
	"errors"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/r8im/r8im/imageops"
	"github.com/r8im/r8im/internal/testenv"
)

// TestPushUnderABodyCap: an image composed by a caller (WeightsLayers +
// AppendWeights over a base they read) goes through a front that refuses
// bodies over the cap with Push, where go-containerregistry's remote.Write
// is refused; the caller's remote options reach go-containerregistry. An
// index of such images goes through with PushIndex, written as given.
func TestPushUnderABodyCap(t *testing.T) {
	const limit = testChunk + 64<<10
	forEachRegistry(t, func(t *testing.T, s chunkedSetup) {
		ctx := context.Background()
		tree, err := imageops.TarFileTree(s.tarPath)
		if err != nil {
			t.Fatal(err)
		}
		layers, err := imageops.WeightsLayers(ctx, tree, imageops.WeightsOptions{Layout: imageops.LayoutPerFile, Compression: imageops.Uncompressed})
		if err != nil {
			t.Fatal(err)
		}
		baseRef, err := name.ParseReference(s.base)
		if err != nil {
			t.Fatal(err)
		}
		base, err := remote.Image(baseRef, s.reg.User.RemoteOptions()...)
		if err != nil {
			t.Fatal(err)
		}
		img, err := imageops.AppendWeights(base, "", created, layers...)
		if err != nil {
			t.Fatal(err)
		}
		want, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}

		ref, err := name.ParseReference(s.proxy.Host + "/" + testenv.TestUser + "/composed:v1")
		if err != nil {
			t.Fatal(err)
		}
		updates := make(chan v1.Update, 1024)
		got, err := imageops.Push(ctx, img, ref, imageops.WithTransport(s.reg.Transport()), imageops.WithKeychain(s.reg.User.Keychain()),
			imageops.WithChunkSize(testChunk), imageops.WithRemoteOptions(remote.WithProgress(updates)))
		if err != nil {
			t.Fatal(err)
		}
		if got.DigestStr() != want.String() || got.Context().String() != ref.Context().String() {
			t.Errorf("Push = %s; want %s@%s", got, ref.Context(), want)
		}
		if st := s.proxy.Stats(); st.LargestBody > limit || st.TooLarge != 0 {
			t.Errorf("the front saw a %d-byte body (cap %d), refused %d", st.LargestBody, limit, st.TooLarge)
		}
		if len(updates) == 0 {
			t.Errorf("remote.WithProgress passed through WithRemoteOptions got no update")
		}
		desc, err := remote.Head(ref, s.reg.User.RemoteOptions()...)
		if err != nil || desc.Digest != want {
			t.Errorf("the tag names %v (%v); want %s", desc, err, want)
		}

		// An index of it and a single-layer variant, one annotated: written
		// as it is (same digest), its new layers chunked under the cap.
		single, err := imageops.WeightsLayers(ctx, tree, imageops.WeightsOptions{Layout: imageops.LayoutSingle, Compression: imageops.Uncompressed})
		if err != nil {
			t.Fatal(err)
		}
		img2, err := imageops.AppendWeights(base, "", created, single...)
		if err != nil {
			t.Fatal(err)
		}
		idx := mutate.AppendManifests(empty.Index,
			mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
			mutate.IndexAddendum{Add: img2, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}, Annotations: map[string]string{"org.example.variant": "single"}}})
		wantIdx, err := idx.Digest()
		if err != nil {
			t.Fatal(err)
		}
		before := s.proxy.Stats().TooLarge
		iref, err := name.ParseReference(s.proxy.Host + "/" + testenv.TestUser + "/composed:index")
		if err != nil {
			t.Fatal(err)
		}
		gotIdx, err := imageops.PushIndex(ctx, idx, iref, imageops.WithTransport(s.reg.Transport()), imageops.WithKeychain(s.reg.User.Keychain()), imageops.WithChunkSize(testChunk))
		if err != nil {
			t.Fatal(err)
		}
		if gotIdx.DigestStr() != wantIdx.String() {
			t.Errorf("PushIndex = %s; want the index as given, %s", gotIdx, wantIdx)
		}
		if st := s.proxy.Stats(); st.LargestBody > limit || st.TooLarge != before {
			t.Errorf("the front saw a %d-byte body (cap %d), refused %d more", st.LargestBody, limit, st.TooLarge-before)
		}
		if desc, err := remote.Head(iref, s.reg.User.RemoteOptions()...); err != nil || desc.Digest != wantIdx {
			t.Errorf("the index tag names %v (%v); want %s", desc, err, wantIdx)
		}
		nested := mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: idx})
		if _, err := imageops.PushIndex(ctx, nested, iref, imageops.WithTransport(s.reg.Transport()), imageops.WithKeychain(s.reg.User.Keychain())); !errors.Is(err, imageops.ErrInvalid) {
			t.Errorf("PushIndex of an index of an index = %v; want ErrInvalid", err)
		}

		plain, err := name.ParseReference(s.proxy.Host + "/" + testenv.TestUser + "/composed-plain:v1")
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(plain, img, s.reg.User.RemoteOptions()...); err == nil {
			t.Fatalf("remote.Write of %d-byte layers through a %d-byte body cap succeeded; the cap is not in the way", 2<<20, limit)
		}

		wrong := ref.Context().Digest("sha256:" + want.Hex[:63] + "0")
		if _, err := imageops.Push(ctx, img, wrong, imageops.WithTransport(s.reg.Transport()), imageops.WithKeychain(s.reg.User.Keychain())); !errors.Is(err, imageops.ErrInvalid) {
			t.Errorf("Push by another digest = %v; want ErrInvalid", err)
		}
	}, testenv.ProxyBodyCap(limit))
}
