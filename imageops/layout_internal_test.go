package imageops

import (
	"archive/tar"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func entry(typ byte, name string, size int64, link string) TreeEntry {
	return TreeEntry{Header: &tar.Header{Typeflag: typ, Name: name, Size: size, Linkname: link, Mode: 0o644}, ID: name}
}

// layerNames lists each planned layer's entries, as written.
func layerNames(ls []*layerPlan) []string {
	var out []string
	for _, l := range ls {
		var names []string
		for _, e := range l.entries {
			names = append(names, strings.TrimPrefix(e.out.Name, "src/weights/"))
		}
		out = append(out, strings.Join(names, ","))
	}
	return out
}

func TestPlanLayers(t *testing.T) {
	big := int64(BigFileSize)
	tests := []struct {
		name    string
		layout  Layout
		entries []TreeEntry
		want    []string
		err     string
	}{{
		name:   "auto: small files bundled first, shards alone, hard links last",
		layout: LayoutAuto,
		entries: []TreeEntry{
			entry(tar.TypeReg, "a.json", 10, ""), entry(tar.TypeLink, "b.link", 0, "z.bin"),
			entry(tar.TypeDir, "d/", 0, ""), entry(tar.TypeReg, "d/x.bin", big, ""),
			entry(tar.TypeSymlink, "s", 0, "a.json"), entry(tar.TypeReg, "z.bin", big, ""),
			entry(tar.TypeReg, "zz.txt", big-1, ""),
		},
		want: []string{"a.json,d/,s,zz.txt", "d/x.bin", "z.bin", "b.link"},
	}, {
		name:   "auto: bundles cut before 256 MiB",
		layout: LayoutAuto,
		entries: []TreeEntry{
			entry(tar.TypeReg, "1", big-1, ""), entry(tar.TypeReg, "2", big-1, ""), entry(tar.TypeReg, "3", big-1, ""),
			entry(tar.TypeReg, "4", big-1, ""), entry(tar.TypeReg, "5", big-1, ""), entry(tar.TypeDir, "6/", 0, ""),
		},
		want: []string{"1,2,3,4", "5,6/"},
	}, {
		name:    "per-file: every file alone, directories bundled",
		layout:  LayoutPerFile,
		entries: []TreeEntry{entry(tar.TypeDir, "d/", 0, ""), entry(tar.TypeReg, "d/a", 1, ""), entry(tar.TypeReg, "d/b", 0, "")},
		want:    []string{"d/", "d/a", "d/b"},
	}, {
		name:    "a path given twice is refused",
		layout:  LayoutAuto,
		entries: []TreeEntry{entry(tar.TypeReg, "a", 1, ""), entry(tar.TypeReg, "./a", big, "")},
		err:     "given twice",
	}, {
		name:    "a hard link to a missing file is refused",
		layout:  LayoutAuto,
		entries: []TreeEntry{entry(tar.TypeReg, "a", 1, ""), entry(tar.TypeLink, "l", 0, "nope")},
		err:     "l",
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, _, err := planLayers(tc.entries, tc.layout, TarPolicy{})
			if tc.err != "" {
				var pe *PolicyError
				if !errors.As(err, &pe) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want a policy error naming %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(layerNames(got)) != fmt.Sprint(tc.want) {
				t.Errorf("layers %q, want %q", layerNames(got), tc.want)
			}
		})
	}
}

func TestPlanLayersBoundsLayerCount(t *testing.T) {
	var entries []TreeEntry
	for i := range MaxWeightsLayers + 1 {
		entries = append(entries, entry(tar.TypeReg, fmt.Sprintf("f%04d", i), 1, ""))
	}
	if _, _, err := planLayers(entries, LayoutPerFile, TarPolicy{}); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "auto layout") {
		t.Fatalf("err = %v, want the layer count refused, pointing at the auto layout", err)
	}
	if ls, _, err := planLayers(entries, LayoutAuto, TarPolicy{}); err != nil || len(ls) != 1 {
		t.Fatalf("auto: %d layers, %v; want one bundle", len(ls), err)
	}
}
