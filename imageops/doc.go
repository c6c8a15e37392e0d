// Package imageops publishes model weights onto container images straight
// against a registry, over go-containerregistry. It knows nothing of queues,
// Redis or cloud storage, and reports progress through a callback
// (WithProgress) instead of logging.
//
// # Operations
//
// Each operation is one call that reads what it needs, pushes, and re-reads
// the result to check it, much as pkg/crane does over pkg/v1/mutate:
//
//   - Affix adds weights (a WeightsTree or a tarball Opener) as new layers
//     on top of a base image, or of every platform of a base index.
//   - Remix builds the code of one image with the weights layers of another,
//     moving no layer byte within one registry.
//   - Recompress (with PlanRecompress to ask first) recompresses an image's
//     layers to zstd.
//   - Extract and ExtractToDir stream only the weights out of an image;
//     Layers describes an image's layers and which are weights.
//
// # Parts
//
// The operations are built of parts that compose with go-containerregistry's
// own types:
//
//   - WeightsLayers lays out a WeightsTree (DirTree, TarFileTree, or any
//     input with random access) into v1.Layers (Layout: auto, per-file,
//     single), each checked by the tar policy (TarPolicy, RewriteTar).
//   - AppendWeights appends such layers to any v1.Image and marks them as
//     weights, so that Extract, Remix and Layers find them.
//   - Push writes a v1.Image to a name.Reference the way the operations do:
//     blobs in chunks a body-capping CDN front accepts, resumable across
//     attempts (WithUploadSessions), mounted within a registry, and checked
//     after; WithRemoteOptions passes remote.Options through. PushIndex
//     does the same for an index of images, written as given.
//
// Results carry name.Digest and v1.Hash values, and marshal to JSON as
// strings.
//
// # Names and registries
//
// A reference must name its registry (r8.im/acme/model:v1) unless a default
// is given with WithDefaultRegistry; there is no implicit one. Credentials
// come from WithKeychain (the docker config by default) or a cog token
// (WithCogToken).
//
// # Errors
//
// Errors say what went wrong and how to fix the input. Callers tell them
// apart with errors.Is (ErrNotFound, ErrUnauthorized, ErrInvalid,
// ErrTooLarge, …) and errors.As (*PolicyError, whose Violations have a Kind;
// *TooLargeError; *MountRefusedError). IsPermanent says whether retrying can
// help, and a transient failure carries the registry's Retry-After
// (RetryAfterError). No error names a program's flag or variable: Remedies
// lists the options or request fields that would get past an error, for a
// program to translate into its own settings.
package imageops
