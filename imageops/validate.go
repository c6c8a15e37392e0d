package imageops

import (
	"fmt"
	"path"
	"regexp"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/klauspost/compress/gzip"
)

// The rules for the inputs of an operation, exported so that every layer
// that takes them (the CLIs, task payloads, training events) refuses what
// an operation would refuse, with the same message, before any work is
// queued. Their errors say what is wrong without naming a flag or field
// (callers add that) and match ErrInvalid with errors.Is.

type invalidInput struct{ msg string }

func (e *invalidInput) Error() string        { return e.msg }
func (e *invalidInput) Is(target error) bool { return target == ErrInvalid }
func (e *invalidInput) Permanent() bool      { return true }

func invalidInputf(format string, args ...any) error {
	return &invalidInput{fmt.Sprintf(format, args...)}
}

// CheckLevel checks a compression level for c; 0 means c's default.
// Levels whose output would not be reproducible (gzip 0 and -1 depend on
// how the input is written) are refused.
func CheckLevel(c Compression, level int) error {
	switch c {
	case Gzip, Auto: // auto: the level is the gzip bundles'
		if level != 0 && level != gzip.HuffmanOnly && (level < 1 || level > 9) {
			return invalidInputf("gzip level %d: use 1 (fastest) to 9 (smallest), or -2 (Huffman only); for no compression use compression none", level)
		}
	case Zstd:
		if level != 0 && (level < 1 || level > 22) {
			return invalidInputf("zstd level %d: use 1 (fastest) to 22 (smallest)", level)
		}
	case Uncompressed:
		if level != 0 {
			return invalidInputf("level %d makes no sense without compression (none)", level)
		}
	default:
		return invalidInputf("unknown compression %q: use gzip, zstd or none", string(c))
	}
	return nil
}

// CheckTarget checks the directory weights are placed under: a clean
// absolute path below / ("" is DefaultTarget) without spaces or control
// characters.
func CheckTarget(t string) error {
	if t == "" {
		return nil
	}
	if !path.IsAbs(t) || path.Clean(t) != t || t == "/" || strings.IndexFunc(t, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0 {
		return invalidInputf("%q must be a clean absolute directory below /, such as %s (no '..', no trailing '/', no spaces)", t, DefaultTarget)
	}
	return nil
}

// pathComponent is the distribution spec's repository path component.
var pathComponent = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$`)

// TagPattern is the distribution spec's tag (CheckTag), which
// docs/event.schema.json repeats.
var TagPattern = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)

func cleanRepoPath(p string) bool {
	for _, c := range strings.Split(p, "/") {
		if !pathComponent.MatchString(c) {
			return false
		}
	}
	return true
}

// CheckReference checks an image reference that is read from far away (a
// queued task, an event): it names its registry host and a tag or digest,
// such as r8.im/acme/model:v1, with clean repository path components. No
// default registry applies.
func CheckReference(ref string) (name.Reference, error) {
	if ref == "" {
		return nil, invalidInputf("required: an image reference such as r8.im/acme/model@sha256:… or r8.im/acme/model:v1")
	}
	r, err := name.ParseReference(ref, name.StrictValidation)
	if err != nil {
		return nil, invalidInputf("%q is not an image reference with a registry host and a tag or digest, such as r8.im/acme/model:v1", ref)
	}
	if !strings.HasPrefix(ref, r.Context().RegistryStr()+"/") {
		return nil, invalidInputf("%q must start with its registry host, such as r8.im/%s", ref, ref)
	}
	if !cleanRepoPath(r.Context().RepositoryStr()) {
		return nil, invalidInputf("%q has an empty, '.' or '..' path component", ref)
	}
	return r, nil
}

// CheckRepository checks a repository to push to: host/path, with its
// registry host, without tag or digest.
func CheckRepository(repo string) error {
	switch {
	case repo == "":
		return invalidInputf("required: the repository to push to, host/path such as r8.im/acme/model")
	case strings.Contains(repo, "@"):
		return invalidInputf("%q names a digest: give host/path only, the digest is computed", repo)
	case strings.Contains(repo[strings.LastIndex(repo, "/")+1:], ":"):
		return invalidInputf("%q has a tag: give host/path only", repo)
	}
	r, err := name.NewRepository(repo, name.StrictValidation)
	host, rest, _ := strings.Cut(repo, "/")
	switch {
	case rest == "" || host != "localhost" && !strings.ContainsAny(host, ".:"):
		return invalidInputf("%q must start with its registry host, such as r8.im/%s", repo, repo)
	case err != nil:
		return invalidInputf("%q is not host/path, such as r8.im/acme/model (lowercase letters, digits, '.', '_', '-')", repo)
	case r.RegistryStr() != host:
		return invalidInputf("%q must start with its registry host, such as r8.im/%s", repo, repo)
	case !cleanRepoPath(rest):
		return invalidInputf("%q has an empty, '.' or '..' path component, or one that starts or ends with '.', '_' or '-'", repo)
	}
	return nil
}

// CheckTag checks a tag: 1-128 letters, digits, '_', '.' or '-', not
// starting with '.' or '-'.
func CheckTag(tag string) error {
	if len(tag) > 128 {
		return invalidInputf("%d characters is not a tag: 1-128 letters, digits, '_', '.' or '-'", len(tag))
	}
	if !TagPattern.MatchString(tag) {
		return invalidInputf("%q is not a tag: 1-128 letters, digits, '_', '.' or '-', not starting with '.' or '-'", tag)
	}
	return nil
}

// CheckDestination checks where an image is pushed: host/repo[:tag],
// never a digest (it is computed).
func CheckDestination(dest string) error {
	if dest == "" {
		return invalidInputf("required: host/repo[:tag], such as r8.im/acme/model:v1")
	}
	if strings.Contains(dest, "@") {
		return invalidInputf("%q names a digest; give host/repo[:tag], the digest is computed", dest)
	}
	repo, tag := dest, ""
	if i := strings.LastIndex(dest, ":"); i > strings.LastIndex(dest, "/") {
		repo, tag = dest[:i], dest[i+1:]
	}
	if err := CheckRepository(repo); err != nil {
		return err
	}
	if tag != "" || strings.HasSuffix(dest, ":") {
		return CheckTag(tag)
	}
	return nil
}
