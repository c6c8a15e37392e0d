package imageops

import (
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// How r8im marks a weights layer, three ways so every reader finds it:
// the seeds' history convention, an OCI layer annotation, and a config label.
const (
	// WeightsCreatedBy is the history created_by of an affixed layer; it ends
	// in " # weights" as the original r8im tool wrote.
	WeightsCreatedByFmt = "COPY weights %s # weights"
	WeightsComment      = "weights"
	// AnnotationWeights marks a weights layer in an OCI manifest.
	AnnotationWeights = "im.r8.weights"
	// AnnotationSource records the digest a recompressed layer came from.
	AnnotationSource = "im.r8.zstd.source"
	// LabelWeightsLayers lists the weights layer digests, comma-separated.
	LabelWeightsLayers = "im.r8.weights.layers"
)

// WeightsKind says why a layer is taken to hold weights.
type WeightsKind string

const (
	NotWeights   WeightsKind = ""
	MarkedR8im   WeightsKind = "r8im"     // our annotation or label
	MarkedSeeds  WeightsKind = "history"  // created_by ends " # weights" or comment "weights"
	MarkedCog    WeightsKind = "cog"      // cog's separate weights layer: COPY --from=weights
	CopySrcLayer WeightsKind = "copy-src" // COPY . /src: code and maybe src/weights files
)

// IsWholeLayer reports whether every file of the layer is weights (as
// opposed to a COPY . /src layer where only src/weights/ is).
func (k WeightsKind) IsWholeLayer() bool {
	return k == MarkedR8im || k == MarkedSeeds || k == MarkedCog
}

// LayerInfo describes one layer from the manifest and config alone.
type LayerInfo struct {
	Index       int               `json:"index"`
	Digest      v1.Hash           `json:"digest"`
	DiffID      v1.Hash           `json:"diff_id"`
	MediaType   string            `json:"media_type"`
	Size        int64             `json:"size"`
	CreatedBy   string            `json:"created_by,omitempty"`
	Comment     string            `json:"comment,omitempty"`
	Weights     WeightsKind       `json:"weights,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
	history     *v1.History
}

// describe lists an image's layers with their history entry and weights
// marker. History entries are matched to layers by skipping empty_layer
// entries; when the counts disagree (hand-made images) layers without a
// matching entry simply have no created_by.
func describe(m *v1.Manifest, cf *v1.ConfigFile) []LayerInfo {
	var hist []*v1.History
	for i := range cf.History {
		if !cf.History[i].EmptyLayer {
			hist = append(hist, &cf.History[i])
		}
	}
	labelled := map[string]bool{}
	for _, d := range strings.Split(cf.Config.Labels[LabelWeightsLayers], ",") {
		if d = strings.TrimSpace(d); d != "" {
			labelled[d] = true
		}
	}
	out := make([]LayerInfo, len(m.Layers))
	for i, l := range m.Layers {
		li := LayerInfo{Index: i, Digest: l.Digest, MediaType: string(l.MediaType), Size: l.Size, Annotations: l.Annotations}
		if i < len(cf.RootFS.DiffIDs) {
			li.DiffID = cf.RootFS.DiffIDs[i]
		}
		if i < len(hist) {
			li.history = hist[i]
			li.CreatedBy, li.Comment = hist[i].CreatedBy, hist[i].Comment
		}
		li.Weights = weightsKind(li, labelled[l.Digest.String()])
		out[i] = li
	}
	return out
}

func weightsKind(li LayerInfo, labelled bool) WeightsKind {
	cb := strings.TrimSpace(li.CreatedBy)
	switch {
	case labelled || li.Annotations[AnnotationWeights] == "true":
		return MarkedR8im
	case strings.HasSuffix(cb, "# weights") || li.Comment == WeightsComment:
		return MarkedSeeds
	case strings.Contains(cb, "COPY --from=weights"):
		return MarkedCog
	case strings.HasPrefix(cb, "COPY . /src"):
		return CopySrcLayer
	}
	return NotWeights
}

// weightsLayers returns the indexes of whole weights layers, oldest first.
func weightsLayers(infos []LayerInfo) []int {
	var idx []int
	for _, li := range infos {
		if li.Weights.IsWholeLayer() {
			idx = append(idx, li.Index)
		}
	}
	return idx
}

// withWeightsLabel returns labels with the weights layer list set to digests.
func withWeightsLabel(labels map[string]string, digests []v1.Hash) map[string]string {
	out := make(map[string]string, len(labels)+1)
	for k, v := range labels {
		out[k] = v
	}
	list := make([]string, len(digests))
	for i, d := range digests {
		list[i] = d.String()
	}
	slices.Sort(list)
	out[LabelWeightsLayers] = strings.Join(slices.Compact(list), ",")
	return out
}
