package imageops_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/r8im/r8im/imageops"
	"github.com/r8im/r8im/internal/testenv"
)

// Affix in one call: the weights of a directory on top of a base image.
func ExampleAffix() {
	res, err := imageops.Affix(context.Background(), imageops.AffixRequest{
		Base: "r8.im/acme/base@sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae",
		Dest: "r8.im/acme/model:v2",
		Tree: imageops.DirTree("weights"),
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res.Ref, len(res.Layers), "weights layers")
}

// Affix taken apart: weights layers from a directory, appended to an image
// read with go-containerregistry, pushed through the chunked upload.
func ExamplePush() {
	ctx := context.Background()
	layers, err := imageops.WeightsLayers(ctx, imageops.DirTree("weights"), imageops.WeightsOptions{})
	if err != nil {
		log.Fatal(err)
	}
	base, err := remote.Image(name.MustParseReference("r8.im/acme/base:v1"))
	if err != nil {
		log.Fatal(err)
	}
	img, err := imageops.AppendWeights(base, imageops.DefaultTarget, time.Now(), layers...)
	if err != nil {
		log.Fatal(err)
	}
	d, err := imageops.Push(ctx, img, name.MustParseReference("r8.im/acme/model:v2"),
		imageops.WithRemoteOptions(remote.WithUserAgent("my-trainer/1.0")))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(d)
}

// Remedies says what would get past an error, in the library's terms; a
// program names its own settings for each.
func ExampleRemedies() {
	var tarball bytes.Buffer
	if err := testenv.WriteTar(&tarball, testenv.File("src/weights/model.bin", "w"), testenv.File("src/predict.py", "x")); err != nil {
		log.Fatal(err)
	}
	_, err := imageops.RewriteTar(io.Discard, &tarball, imageops.TarPolicy{})
	var pe *imageops.PolicyError
	if errors.As(err, &pe) {
		fmt.Println(pe.Violations[0].Kind)
	}
	for _, r := range imageops.Remedies(err) {
		switch r {
		case imageops.RemedyAllowOutsideTarget:
			fmt.Println("hint: pass --allow-outside-target to keep it")
		}
	}
	// Output:
	// outside-target
	// hint: pass --allow-outside-target to keep it
}
