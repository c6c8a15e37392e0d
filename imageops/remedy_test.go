package imageops_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/r8im/r8im/imageops"
)

// TestViolationKindsAndRemedies: each refused entry has a kind saying what
// could get it through, Remedies turns the kinds into the library's own
// knobs, and no reason names a program's flag or variable (the commands add
// those: internal/cli.Hint).
func TestViolationKindsAndRemedies(t *testing.T) {
	model := tarReg("src/weights/model.bin", "w")
	for _, tc := range []struct {
		name    string
		policy  imageops.TarPolicy
		entries []tarEntry
		kind    imageops.ViolationKind
		remedy  []imageops.Remedy
	}{
		{"file outside the target", imageops.TarPolicy{}, []tarEntry{model, tarReg("src/predict.py", "x")},
			imageops.ViolationOutsideTarget, []imageops.Remedy{imageops.RemedyAllowOutsideTarget}},
		{"symlink out of the target", imageops.TarPolicy{}, []tarEntry{model, tarSymlink("src/weights/p", "/etc/passwd")},
			imageops.ViolationOutsideTarget, []imageops.Remedy{imageops.RemedyAllowOutsideTarget}},
		{"mixed layouts", imageops.TarPolicy{}, []tarEntry{tarReg("model.bin", "w"), tarReg("src/weights/other.bin", "x")},
			imageops.ViolationOutsideTarget, []imageops.Remedy{imageops.RemedyAllowOutsideTarget}},
		{"device", imageops.TarPolicy{}, []tarEntry{model, {Name: "src/weights/null", Type: tar.TypeChar}},
			imageops.ViolationEntry, nil},
		{"climbing name", imageops.TarPolicy{}, []tarEntry{model, tarReg("src/weights/../../etc/x", "x")},
			imageops.ViolationEntry, nil},
		{"long name", imageops.TarPolicy{MaxNameLength: 100}, []tarEntry{model, tarReg("src/weights/"+strings.Repeat("n", 100), "x")},
			imageops.ViolationNameTooLong, []imageops.Remedy{imageops.RemedyMaxNameLength}},
		{"too many entries", imageops.TarPolicy{MaxEntries: 1}, []tarEntry{model, tarReg("src/weights/b", "x")},
			imageops.ViolationTooManyEntries, []imageops.Remedy{imageops.RemedyMaxTarEntries}},
		{"too many bytes", imageops.TarPolicy{MaxBytes: 2}, []tarEntry{model, tarReg("src/weights/b", "xx")},
			imageops.ViolationTooLarge, []imageops.Remedy{imageops.RemedyMaxWeightsSize}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := imageops.RewriteTar(&bytes.Buffer{}, bytes.NewReader(makeTar(t, tc.entries...)), tc.policy)
			var pe *imageops.PolicyError
			if !errors.As(err, &pe) || len(pe.Violations) != 1 {
				t.Fatalf("RewriteTar = %v; want a *PolicyError with one violation", err)
			}
			if v := pe.Violations[0]; v.Kind != tc.kind {
				t.Errorf("violation %+v has kind %q, want %q", v, v.Kind, tc.kind)
			}
			if got := imageops.Remedies(err); !slices.Equal(got, tc.remedy) {
				t.Errorf("Remedies = %v, want %v", got, tc.remedy)
			}
			if strings.Contains(err.Error(), "--allow") || strings.Contains(err.Error(), "R8IM_") {
				t.Errorf("the library's error names a program's setting: %v", err)
			}
		})
	}
}

// TestNoSilentDefaultRegistry: without WithDefaultRegistry a reference must
// name its registry (go-containerregistry alone would take Docker Hub's);
// with it, a short name gets that registry.
func TestNoSilentDefaultRegistry(t *testing.T) {
	ctx := context.Background()
	_, err := imageops.Layers(ctx, "acme/model:v1")
	if !errors.Is(err, imageops.ErrInvalid) || !strings.Contains(err.Error(), "names no registry host") {
		t.Errorf("Layers(acme/model:v1) = %v; want ErrInvalid: no registry host", err)
	}
	_, err = imageops.ListTags(ctx, "acme/model")
	if !errors.Is(err, imageops.ErrInvalid) {
		t.Errorf("ListTags(acme/model) = %v; want ErrInvalid", err)
	}
	// With a default, the short name reaches that registry: here a closed
	// port, so the error is the connection's, not the name's.
	_, err = imageops.Layers(ctx, "acme/model:v1", imageops.WithDefaultRegistry("127.0.0.1:1"))
	if err == nil || errors.Is(err, imageops.ErrInvalid) || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Errorf("Layers with a default registry = %v; want a failure reaching 127.0.0.1:1", err)
	}
}
