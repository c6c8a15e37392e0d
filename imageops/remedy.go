package imageops

import (
	"errors"
	"slices"
)

// A Remedy names what a caller can change to get past an error, in this
// package's terms: an Option or a request field. Error texts say what went
// wrong and how to fix the input; they never name a program's flags or
// variables. A program that offers its users a way round (r8im's
// --ca-file, a worker's R8IM_CA_FILE) asks Remedies and says so itself.
type Remedy string

const (
	// RemedyCredentials: other registry credentials (WithKeychain,
	// WithCogToken).
	RemedyCredentials Remedy = "credentials"
	// RemedyRootCAs: trust the registry's certificate authority
	// (WithRootCAs), or skip verification (WithInsecure).
	RemedyRootCAs Remedy = "root-cas"
	// RemedyMaxManifestSize: a larger bound on manifests, indexes and
	// configs (WithMaxManifestSize), if the image is genuine.
	RemedyMaxManifestSize Remedy = "max-manifest-size"
	// RemedyMaxWeightsSize, RemedyMaxTarEntries, RemedyMaxNameLength: a
	// larger TarLimits bound (WithTarLimits), if the weights are genuine.
	RemedyMaxWeightsSize Remedy = "max-weights-size"
	RemedyMaxTarEntries  Remedy = "max-tar-entries"
	RemedyMaxNameLength  Remedy = "max-name-length"
	// RemedyPlatform: choose one platform of an index (WithPlatform), or
	// every one.
	RemedyPlatform Remedy = "platform"
	// RemedyAllowOutsideTarget: keep entries outside the target
	// (AffixRequest.AllowOutsideTarget).
	RemedyAllowOutsideTarget Remedy = "allow-outside-target"
)

// Remedies lists, in a fixed order and without repeats, what could get
// past err (nil when nothing but fixing the input or the registry can).
func Remedies(err error) []Remedy {
	var out []Remedy
	add := func(r Remedy) {
		if r != "" && !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	var pe *PolicyError
	if errors.As(err, &pe) {
		for _, v := range pe.Violations {
			add(v.Kind.remedy())
		}
	}
	var re *remediedError
	if errors.As(err, &re) {
		for _, r := range re.remedies {
			add(r)
		}
	}
	switch {
	case errors.Is(err, ErrUnauthorized):
		add(RemedyCredentials)
	case errors.Is(err, ErrTooLarge):
		add(RemedyMaxManifestSize)
	case untrustedCertificate(err):
		add(RemedyRootCAs)
	}
	slices.Sort(out)
	return out
}

// remedy is what gets a violation of kind k through, if anything.
func (k ViolationKind) remedy() Remedy {
	switch k {
	case ViolationOutsideTarget:
		return RemedyAllowOutsideTarget
	case ViolationTooLarge:
		return RemedyMaxWeightsSize
	case ViolationTooManyEntries:
		return RemedyMaxTarEntries
	case ViolationNameTooLong:
		return RemedyMaxNameLength
	}
	return ""
}

// remediedError marks an error with the remedies that get past it.
type remediedError struct {
	err      error
	remedies []Remedy
}

func (e *remediedError) Error() string { return e.err.Error() }
func (e *remediedError) Unwrap() error { return e.err }

// withRemedy marks err with what gets past it.
func withRemedy(err error, r ...Remedy) error {
	if err == nil {
		return nil
	}
	return &remediedError{err: err, remedies: r}
}
