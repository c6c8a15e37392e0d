package imageops

import (
	"archive/tar"
	"fmt"
	"strings"
)

// Layout says how the weights are cut into layers.
type Layout string

// The weights layouts.
const (
	// LayoutAuto gives each regular file of at least BigFileSize its own
	// layer, and bundles the smaller files, directories and links, in
	// order, into layers of at most BundleSize.
	LayoutAuto Layout = "auto"
	// LayoutPerFile gives every regular file its own layer; directories
	// and links are bundled.
	LayoutPerFile Layout = "per-file"
	// LayoutSingle puts all the weights in one layer, in input order.
	LayoutSingle Layout = "single"
)

// BigFileSize is the size from which LayoutAuto gives a file a layer of
// its own; BundleSize bounds the content of a bundle layer. The figures are
// cog's weights format's: shards stay whole and pull in parallel, small
// files do not become a hundred tiny layers.
const (
	BigFileSize = 64 << 20
	BundleSize  = 256 << 20
)

// MaxWeightsLayers bounds the layers one layout may make: registries and
// runtimes handle a few hundred layers per image badly or not at all.
const MaxWeightsLayers = 500

// ParseLayout parses a layout name: auto, per-file or single ("" is auto).
func ParseLayout(s string) (Layout, error) {
	switch l := Layout(strings.ToLower(strings.TrimSpace(s))); l {
	case "":
		return LayoutAuto, nil
	case LayoutAuto, LayoutPerFile, LayoutSingle:
		return l, nil
	}
	return "", fmt.Errorf("unknown weights layout %q: use auto, per-file or single", s)
}

// ownLayer reports whether layout l gives the input entry h a layer of its
// own.
func (l Layout) ownLayer(h *tar.Header) bool {
	if h.Typeflag != tar.TypeReg {
		return false
	}
	switch l {
	case LayoutPerFile:
		return true
	case LayoutAuto:
		return h.Size >= BigFileSize
	}
	return false
}

// layerPlan is one weights layer of a layout: its entries, as the policy
// rewrote them, with where their content comes from.
type layerPlan struct {
	index   int
	entries []plannedEntry
	own     bool  // a file's own layer (not a bundle)
	content int64 // regular file bytes
	files   int
}

type plannedEntry struct {
	out *tar.Header // as written to the layer
	src TreeEntry   // where its content is read from
}

// planLayers orders a tree's entries into layers and checks them with the
// policy in that order, which is the order they will be unpacked in:
//
//   - the bundles: every entry without a layer of its own except hard
//     links, in input order, cut before BundleSize would be exceeded;
//   - the files with layers of their own, in input order;
//   - the hard links, bundled likewise, so that each comes after the file
//     it links to, whichever layer holds it.
//
// The same entries and options give the same layers, whatever the number of
// jobs or the order the contents are read in. A path that appears twice is
// refused: which copy wins would depend on the layout.
func planLayers(entries []TreeEntry, layout Layout, p TarPolicy) ([]*layerPlan, *rewriter, error) {
	var bundled, own, links []TreeEntry
	for _, e := range entries {
		switch {
		case layout.ownLayer(e.Header):
			own = append(own, e)
		case e.Header.Typeflag == tar.TypeLink:
			links = append(links, e)
		default:
			bundled = append(bundled, e)
		}
	}
	rw := newRewriter(p)
	var layers []*layerPlan
	var cur *layerPlan
	seen := map[string]string{}
	add := func(e TreeEntry, alone bool) bool {
		out, stop := rw.admit(e.Header)
		if out != nil {
			if first, dup := seen[out.Name]; dup {
				rw.refuse(e.Header.Name, entryFault(fmt.Sprintf("the path is given twice (first as %s); a layered layout needs each path once: remove one, or publish with the single layout", quoteEntry(first))))
				return stop
			}
			seen[out.Name] = e.Header.Name
			if alone || cur == nil || cur.own || (out.Typeflag == tar.TypeReg && cur.content > 0 && cur.content+out.Size > BundleSize) {
				cur = &layerPlan{index: len(layers), own: alone}
				layers = append(layers, cur)
			}
			cur.entries = append(cur.entries, plannedEntry{out: out, src: e})
			if out.Typeflag == tar.TypeReg {
				cur.content += out.Size
				cur.files++
			}
		}
		return stop
	}
	run := func(list []TreeEntry, alone bool) bool {
		for _, e := range list {
			if add(e, alone) {
				return true
			}
		}
		return false
	}
	if !run(bundled, false) && !run(own, true) {
		cur = nil // the links start a bundle of their own
		run(links, false)
	}
	if err := rw.finish(); err != nil {
		return nil, nil, err
	}
	if rw.own == 0 {
		return nil, nil, ErrEmptyTar
	}
	if len(layers) > MaxWeightsLayers {
		return nil, nil, invalidf("the %s layout makes %d weights layers, over the limit of %d: use the auto layout, or bundle the small files", layout, len(layers), MaxWeightsLayers)
	}
	return layers, rw, nil
}
