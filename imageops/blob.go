package imageops

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// openBlob GETs blob d of repo without hashing it on the way:
// go-containerregistry's remote layers verify a blob's digest as it is read,
// which costs a core-second per GiB. Callers use it only where the content
// is checked anyway — Recompress checks the decompressed stream against the
// config's diffID before anything is committed. Its length is still checked.
func (o *options) openBlob(ctx context.Context, repo name.Repository, d v1.Descriptor, m *meter) (io.ReadCloser, error) {
	client, err := o.registryClient(ctx, repo, m, transport.PullScope, true)
	if err != nil {
		return nil, err
	}
	u := url.URL{Scheme: repo.Scheme(), Host: repo.RegistryStr(), Path: fmt.Sprintf("/v2/%s/blobs/%s", repo.RepositoryStr(), d.Digest)}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, registryErr(err, fmt.Sprintf("fetching blob %s of %s", d.Digest, repo))
	}
	if err := transport.CheckError(resp, http.StatusOK); err != nil {
		resp.Body.Close()
		return nil, registryErr(err, fmt.Sprintf("fetching blob %s of %s", d.Digest, repo))
	}
	return &sizedBody{rc: resp.Body, left: d.Size, what: d.Digest.String()}, nil
}

// sizedBody fails a body that is longer or shorter than the descriptor says.
type sizedBody struct {
	rc   io.ReadCloser
	left int64
	what string
}

func (b *sizedBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	switch {
	case b.left < 0:
		return n, fmt.Errorf("blob %s is longer than its descriptor says", b.what)
	case err == io.EOF && b.left > 0:
		return n, fmt.Errorf("blob %s ended %d bytes short: %w", b.what, b.left, io.ErrUnexpectedEOF)
	}
	return n, err
}

func (b *sizedBody) Close() error { return b.rc.Close() }
