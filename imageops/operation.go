package imageops

import (
	"context"
	"fmt"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// operation is what every write operation (affix, remix, zstd) sets up: the
// options, a meter on the wire, go-containerregistry's options, the stage
// timer, and the destination.
type operation struct {
	ctx   context.Context
	o     *options
	m     *meter
	ropts []remote.Option
	st    *stages
	repo  name.Repository
	tag   string
	// uploadAll: the images' layers are the caller's (Push), not up yet.
	uploadAll bool
}

// begin parses the destination and prepares the operation.
func begin(ctx context.Context, opts []Option, dest string) (*operation, error) {
	o := makeOptions(opts)
	repo, tag, err := o.parseDest(dest)
	if err != nil {
		return nil, err
	}
	return o.begin(ctx, repo, tag), nil
}

// begin prepares an operation that pushes to repo, tagged tag if not "".
func (o *options) begin(ctx context.Context, repo name.Repository, tag string) *operation {
	m := newMeter()
	m.requireMount = o.requireMount
	if tag == "" {
		m.addNote(fmt.Sprintf("%s gets no tag: the image is pushed by digest only, and `registry garbage-collect --delete-untagged` may delete it; "+
			"give the destination a tag (%s:TAG) to keep it", repo, repo))
	}
	return &operation{ctx: ctx, o: o, m: m, ropts: o.remoteOptions(ctx, m), st: newStages(o), repo: repo, tag: tag}
}

// resolve parses an input reference and fetches its manifest(s), timed as
// the "resolve" stage.
func (op *operation) resolve(o *options, ref, what string) (name.Reference, *source, error) {
	r, err := o.parseRef(ref, what)
	if err != nil {
		return nil, nil, err
	}
	if reg := r.Context().RegistryStr(); reg != op.repo.RegistryStr() {
		if o.requireMount {
			return nil, nil, &MountRefusedError{Registry: op.repo.RegistryStr(), From: r.Context().String(), CrossRegistry: true}
		}
		op.m.addNote(fmt.Sprintf("the %s %s is on another registry than %s: the layers the destination lacks were copied (downloaded and uploaded again), not mounted",
			what, r.Context(), op.repo))
	}
	op.st.start("resolve")
	src, err := o.resolve(op.ctx, r, op.ropts, what)
	return r, src, err
}

// publish pushes the images — as a new index when src was one and every
// platform was processed — then re-reads the result by digest and checks
// its blobs, timed as "push" and "verify".
func (op *operation) publish(src *source, images []platformImage, toOCI bool) (*pushed, error) {
	if src.index != nil && src.attestations > 0 {
		op.m.addNote(fmt.Sprintf("%d attestation manifest(s) (platform unknown/unknown) of %s were left out of the new index: "+
			"they describe the old images, not the new ones", src.attestations, src.ref))
	}
	for _, pi := range images {
		op.m.addSizes(pi.image)
	}
	op.st.start("push")
	if err := op.uploadLayers(images, op.uploadAll); err != nil {
		return nil, err
	}
	p, err := push(op.repo, op.tag, src, images, toOCI, op.ropts)
	if err != nil {
		return nil, err
	}
	op.st.start("verify")
	if err := verifyPushed(op.ctx, op.o, p.ref, op.ropts); err != nil {
		return nil, err
	}
	op.st.stop()
	return p, nil
}

// finish gives a transient failure the registry's Retry-After, if it sent
// one, so the caller's retry can honour it.
func (op *operation) finish(err error) error {
	if err == nil || IsPermanent(err) {
		return err
	}
	if d := time.Duration(op.m.retryAfter.Load()); d > 0 {
		return &RetryAfterError{After: d, Err: err}
	}
	return err
}
