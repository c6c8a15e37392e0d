package imageops

import (
	"context"
	"fmt"
	"path"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func (eo ExtractOptions) target() (string, error) {
	t := eo.Target
	if t == "" {
		t = DefaultTarget
	}
	if !path.IsAbs(t) || path.Clean(t) == "/" {
		return "", invalidf("target %q must be an absolute directory below / such as /src/weights", eo.Target)
	}
	return strings.TrimPrefix(path.Clean(t), "/"), nil
}

// weightsSelection is the one image extract reads and the layers it takes.
type weightsSelection struct {
	img      v1.Image
	ref      name.Digest // repo@sha256 of the image
	picked   []LayerInfo // oldest first
	fallback bool        // COPY . /src layers: only their entries under the target count
}

// selectWeights resolves ref to one image (an index must be narrowed to a
// platform) and picks its weights layers; m meters the manifest and config
// reads.
func selectWeights(ctx context.Context, o *options, ref, target string, m *meter) (*weightsSelection, error) {
	src, err := o.resolveName(ctx, ref, "image", m)
	if err != nil {
		return nil, err
	}
	if len(src.images) != 1 {
		return nil, withRemedy(invalidf("%s is an index of %d images and extract reads one: choose one platform", src.ref, len(src.images)), RemedyPlatform)
	}
	info, err := describeImage(src, src.images[0])
	if err != nil {
		return nil, err
	}
	picked, fallback := pickWeights(info.Layers)
	if len(picked) == 0 {
		return nil, noWeights(info.Ref.String(), target, false)
	}
	return &weightsSelection{img: src.images[0].image, ref: info.Ref, picked: picked, fallback: fallback}, nil
}

// pickWeights returns the whole weights layers or, when there are none, the
// COPY . /src layers (fallback), oldest first.
func pickWeights(infos []LayerInfo) (picked []LayerInfo, fallback bool) {
	for _, i := range weightsLayers(infos) {
		picked = append(picked, infos[i])
	}
	if len(picked) > 0 {
		return picked, false
	}
	for _, li := range infos {
		if li.Weights == CopySrcLayer {
			picked = append(picked, li)
		}
	}
	return picked, true
}

type noWeightsError struct{ msg string }

func (e *noWeightsError) Error() string        { return e.msg }
func (e *noWeightsError) Is(target error) bool { return target == ErrNoWeights || target == ErrInvalid }
func (e *noWeightsError) Permanent() bool      { return true }

func noWeights(ref, target string, copyEmpty bool) error {
	msg := fmt.Sprintf("%s has no weights layers: searched for layers marked by r8im (annotation %s=true or config label %s), "+
		"by history (created_by ending \" # weights\" or comment %q) and by cog (COPY --from=weights), then for COPY . /src layers holding files under /%s",
		ref, AnnotationWeights, LabelWeightsLayers, WeightsComment, target)
	if copyEmpty {
		msg += "; its COPY . /src layers hold nothing there"
	}
	return &noWeightsError{msg: msg}
}
