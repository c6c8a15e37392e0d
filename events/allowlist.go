package events

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path"
	"regexp"
	"strings"

	"github.com/r8im/r8im/imageops"
)

// The environment variables that configure the allowlists; messages name
// them so an operator knows what to set.
const (
	EnvAllowedSources       = "R8IM_ALLOWED_SOURCES"
	EnvAllowedDestinations  = "R8IM_ALLOWED_DESTINATIONS"
	EnvAllowedCallbackHosts = "R8IM_ALLOWED_CALLBACK_HOSTS"
	EnvAllowedBases         = "R8IM_ALLOWED_BASES"
	EnvAllowedTargets       = "R8IM_ALLOWED_TARGETS"
)

// DefaultTarget is the directory weights land in when an event names no
// target, and the only target allowed when Allowlists.Targets is empty.
const DefaultTarget = imageops.DefaultTarget

// Allowlists say which weights URLs, destination repositories, callback
// hosts, base images and target directories events may name. An empty list
// allows nothing (except Targets, whose empty list allows DefaultTarget):
// the receiver must be configured. Patterns are those ParseAllowlist accepts; an entry that is not
// a valid pattern of its list's kind matches nothing.
//
//   - Sources: scheme://host/path patterns, scheme s3, https or http (plain
//     http only matches http:// entries). The scheme and the host (an S3
//     bucket, or host[:port]) match exactly; a path ending in /* matches
//     every object below it, at any depth; any other path matches with
//     path.Match (a * stays within one path segment). Examples:
//     s3://weights/*, s3://bucket/prefix/*, https://files.example.com/*.
//   - Destinations: host/path patterns: the registry host matches exactly,
//     a path ending in /* matches every repository below it. Examples:
//     r8.im/*, r8.im/acme/*, localhost:5000/acme/model.
//   - CallbackHosts: exact host names or IP addresses (any port), or
//     *.example.com, which matches every host under example.com but not
//     example.com itself.
//   - Bases: repository patterns as for Destinations, matched against the
//     repository of an event's base image (its tag or digest aside): the
//     worker reads the base with its own registry credentials, so an event
//     may only name bases the operator allows.
//   - Targets: exact, clean, absolute directories (not "/") the weights may
//     be placed in; empty means DefaultTarget only.
type Allowlists struct {
	Sources, Destinations, CallbackHosts []string
	Bases, Targets                       []string
}

// AllowlistSettings are the comma-separated allowlists as configured, one
// field per environment variable.
type AllowlistSettings struct {
	Sources       string // R8IM_ALLOWED_SOURCES
	Destinations  string // R8IM_ALLOWED_DESTINATIONS
	CallbackHosts string // R8IM_ALLOWED_CALLBACK_HOSTS
	Bases         string // R8IM_ALLOWED_BASES
	Targets       string // R8IM_ALLOWED_TARGETS; empty: DefaultTarget
}

// ParseAllowlist splits a comma-separated list, trims each entry, drops
// empty ones and validates each pattern by its form: an entry with "://" is
// a source, one with a "/" a destination, anything else a callback host.
// Host names are lowercased (S3 bucket names are kept as written). The
// error lists every bad entry.
func ParseAllowlist(csv string) ([]string, error) {
	var out []string
	var errs []error
	for _, entry := range strings.Split(csv, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		var norm string
		var err error
		switch patternKind(entry) {
		case kindSource:
			var p sourcePattern
			p, err = parseSourcePattern(entry)
			norm = p.String()
		case kindDestination:
			var p destPattern
			p, err = parseDestPattern(entry)
			norm = p.String()
		default:
			norm, err = parseHostPattern(entry)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("allowlist entry %q: %w", clip(entry), err))
			continue
		}
		out = append(out, norm)
	}
	return out, errors.Join(errs...)
}

// NewAllowlists parses the lists as configured and checks that each holds
// patterns of its kind. The error names the variable of every bad entry.
func NewAllowlists(c AllowlistSettings) (Allowlists, error) {
	var a Allowlists
	var errs []error
	for _, l := range []struct {
		env  string
		csv  string
		dest *[]string
	}{
		{EnvAllowedSources, c.Sources, &a.Sources},
		{EnvAllowedDestinations, c.Destinations, &a.Destinations},
		{EnvAllowedCallbackHosts, c.CallbackHosts, &a.CallbackHosts},
		{EnvAllowedBases, c.Bases, &a.Bases},
	} {
		list, err := ParseAllowlist(l.csv)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", l.env, err))
		}
		*l.dest = list
	}
	targets, err := ParseTargets(c.Targets)
	if err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", EnvAllowedTargets, err))
	}
	a.Targets = targets
	return a, errors.Join(append(errs, a.Check())...)
}

// ParseTargets splits a comma-separated list of target directories, trims
// and cleans each (path.Clean) and drops empty ones. Each must be absolute
// and not "/"; the error lists every bad entry.
func ParseTargets(csv string) ([]string, error) {
	var out []string
	var errs []error
	for _, entry := range strings.Split(csv, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		if err := checkTargetEntry(entry); err != nil {
			errs = append(errs, fmt.Errorf("target %q: %w", clip(entry), err))
			continue
		}
		out = append(out, path.Clean(entry))
	}
	return out, errors.Join(errs...)
}

func checkTargetEntry(t string) error {
	switch {
	case !path.IsAbs(t):
		return errors.New("not an absolute directory; use e.g. /src/weights")
	case path.Clean(t) == "/":
		return errors.New("the root directory would let weights replace any file of the image; name a directory such as /src/weights")
	case strings.ContainsAny(t, "*?["):
		return errors.New("targets are exact directories, without wildcards")
	case hasControlOrSpace(t) || len(t) > maxRefLen:
		return errors.New("spaces, control characters or more than 1024 bytes")
	}
	return nil
}

// Check reports entries that are not valid patterns of their list's kind (a
// destination pattern among the sources, for instance), naming the
// environment variable to fix.
func (a Allowlists) Check() error {
	var errs []error
	for _, p := range a.Sources {
		if patternKind(p) != kindSource {
			errs = append(errs, fmt.Errorf("%s: %q is not a source pattern; use scheme://host/path/*, such as s3://weights/* or https://files.example.com/*", EnvAllowedSources, clip(p)))
		} else if _, err := parseSourcePattern(p); err != nil {
			errs = append(errs, fmt.Errorf("%s: %q: %w", EnvAllowedSources, clip(p), err))
		}
	}
	errs = append(errs, checkRepoPatterns(EnvAllowedDestinations, "r8.im/* or r8.im/acme/*", a.Destinations)...)
	errs = append(errs, checkRepoPatterns(EnvAllowedBases, "r8.im/acme/* or r8.im/acme/model-base", a.Bases)...)
	for _, p := range a.Targets {
		if err := checkTargetEntry(p); err != nil {
			errs = append(errs, fmt.Errorf("%s: %q: %w", EnvAllowedTargets, clip(p), err))
		} else if path.Clean(p) != p {
			errs = append(errs, fmt.Errorf("%s: %q is not clean: write %s", EnvAllowedTargets, clip(p), path.Clean(p)))
		}
	}
	for _, p := range a.CallbackHosts {
		if patternKind(p) != kindHost {
			errs = append(errs, fmt.Errorf("%s: %q is not a host name; use hooks.example.com or *.example.com", EnvAllowedCallbackHosts, clip(p)))
		} else if _, err := parseHostPattern(p); err != nil {
			errs = append(errs, fmt.Errorf("%s: %q: %w", EnvAllowedCallbackHosts, clip(p), err))
		}
	}
	return errors.Join(errs...)
}

type kind int

const (
	kindHost kind = iota
	kindDestination
	kindSource
)

func patternKind(p string) kind {
	switch {
	case strings.Contains(p, "://"):
		return kindSource
	case strings.Contains(p, "/"):
		return kindDestination
	}
	return kindHost
}

// sourcePattern is a parsed source entry. With prefix set, path ends in '/'
// and matches every path that starts with it; otherwise path is a
// path.Match pattern.
type sourcePattern struct {
	scheme, host, path string
	prefix             bool
}

func (p sourcePattern) String() string {
	s := p.scheme + "://" + p.host + p.path
	if p.prefix {
		s += "*"
	}
	return s
}

func parseSourcePattern(s string) (sourcePattern, error) {
	scheme, rest, _ := strings.Cut(s, "://")
	scheme = strings.ToLower(scheme)
	var p sourcePattern
	switch scheme {
	case "s3", "https", "http":
	case "file":
		return p, errors.New("file:// is never accepted from events (untrusted input must not read the worker's disk)")
	default:
		return p, fmt.Errorf("scheme %q: use s3://, https:// or http://", clip(scheme))
	}
	host, pth, ok := strings.Cut(rest, "/")
	if !ok || pth == "" {
		return p, fmt.Errorf("no path: end with /* to allow everything under the host, such as %s://%s/*", scheme, clip(host))
	}
	if scheme == "s3" {
		if !s3Bucket.MatchString(host) {
			return p, errors.New("not an S3 bucket name (letters, digits, '.' and '-', no port)")
		}
	} else {
		host = strings.ToLower(host)
		if !validHostPort(host) {
			return p, errors.New("the host must be a plain host name or IP address with an optional port, without '*', user name or password")
		}
	}
	pth = "/" + pth
	if strings.ContainsAny(pth, "%\\?#") || hasControlOrSpace(pth) {
		return p, errors.New("the path may not hold '%', '\\', '?', '#', spaces or control characters")
	}
	if !cleanSegments(pth[1:]) {
		return p, errors.New("the path may not hold empty, '.' or '..' segments; end it with /* to allow everything below")
	}
	if strings.HasSuffix(pth, "/*") {
		pth = strings.TrimSuffix(pth, "*")
		if strings.ContainsAny(pth, "*?[]") {
			return p, errors.New("a pattern ending in /* takes no other wildcard")
		}
		return sourcePattern{scheme: scheme, host: host, path: pth, prefix: true}, nil
	}
	if _, err := path.Match(pth, ""); err != nil {
		return p, fmt.Errorf("bad wildcard pattern: %w", err)
	}
	return sourcePattern{scheme: scheme, host: host, path: pth}, nil
}

// matches reports whether the parsed URL (already checked by checkWeights:
// no user info, clean path) is allowed by p.
func (p sourcePattern) matches(u *url.URL) bool {
	if u.Scheme != p.scheme {
		return false
	}
	host := u.Host
	if p.scheme != "s3" { // S3 bucket names are case-sensitive; DNS names are not
		host = strings.ToLower(host)
	}
	if host != p.host {
		return false
	}
	if p.prefix {
		return len(u.Path) > len(p.path) && strings.HasPrefix(u.Path, p.path)
	}
	ok, err := path.Match(p.path, u.Path)
	return err == nil && ok
}

// destPattern is a parsed destination entry: the registry host, and a
// repository path that is a prefix (ending in '/') or a path.Match pattern.
type destPattern struct {
	host, path string
	prefix     bool
}

func (p destPattern) String() string {
	s := p.host + "/" + p.path
	if p.prefix {
		s += "*"
	}
	return s
}

func parseDestPattern(s string) (destPattern, error) {
	host, pth, _ := strings.Cut(s, "/")
	host = strings.ToLower(host)
	var p destPattern
	if !validHostPort(host) {
		return p, errors.New("the registry must be a plain host name with an optional port, such as r8.im or localhost:5000")
	}
	if pth == "" {
		return p, fmt.Errorf("no repository path: end with /* to allow every repository of the registry, such as %s/*", host)
	}
	if !cleanSegments(pth) {
		return p, errors.New("the repository path may not hold empty, '.' or '..' segments")
	}
	if pth == "*" || strings.HasSuffix(pth, "/*") {
		pth = strings.TrimSuffix(pth, "*")
		if strings.ContainsAny(pth, "*?[]") {
			return p, errors.New("a pattern ending in /* takes no other wildcard")
		}
		if !repoPatternChars.MatchString(pth) {
			return p, errors.New("repository paths are lowercase letters, digits, '.', '_', '-' and '/'")
		}
		return destPattern{host: host, path: pth, prefix: true}, nil
	}
	if !repoPatternChars.MatchString(pth) {
		return p, errors.New("repository paths are lowercase letters, digits, '.', '_', '-' and '/' (with * ? [ ] wildcards)")
	}
	if _, err := path.Match(pth, ""); err != nil {
		return p, fmt.Errorf("bad wildcard pattern: %w", err)
	}
	return destPattern{host: host, path: pth}, nil
}

// matches takes the registry host as written and the repository path, both
// already validated by checkDestination.
func (p destPattern) matches(host, repo string) bool {
	if strings.ToLower(host) != p.host {
		return false
	}
	if p.prefix {
		return len(repo) > len(p.path) && strings.HasPrefix(repo, p.path)
	}
	ok, err := path.Match(p.path, repo)
	return err == nil && ok
}

// parseHostPattern returns the normalised host pattern: a lowercase host
// name or IP address (IPv6 without brackets), or "*." and a domain.
func parseHostPattern(s string) (string, error) {
	h := strings.ToLower(s)
	if ip := net.ParseIP(strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")); ip != nil {
		return ip.String(), nil
	}
	domain, wild := strings.CutPrefix(h, "*.")
	if !hostName.MatchString(domain) {
		if strings.Contains(h, ":") {
			return "", errors.New("callback hosts are host names without a port (any port is allowed)")
		}
		return "", errors.New("not a host name; use hooks.example.com, or *.example.com for every host under example.com")
	}
	if wild && !strings.Contains(domain, ".") {
		return "", fmt.Errorf("*.%s is too broad: name a domain such as *.example.com", domain)
	}
	return h, nil
}

// hostMatches reports whether host (from url.URL.Hostname) is allowed by
// the normalised pattern p.
func hostMatches(p, host string) bool {
	host = strings.ToLower(host)
	if ip := net.ParseIP(host); ip != nil {
		host = ip.String()
	}
	if suffix, ok := strings.CutPrefix(p, "*"); ok {
		return len(host) > len(suffix) && strings.HasSuffix(host, suffix) && !strings.HasPrefix(host, ".")
	}
	return host == p
}

var (
	// hostName is a DNS name: labels of letters, digits and '-', no
	// trailing dot.
	hostName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)
	// s3Bucket allows legacy bucket names (uppercase, '_') but no ':'.
	s3Bucket         = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$`)
	repoPatternChars = regexp.MustCompile(`^[a-z0-9._/*?\[\]-]*$`)
)

// validHostPort accepts host[:port] where host is a DNS name or an IP
// address (IPv6 in brackets), lowercase.
func validHostPort(hp string) bool {
	host, port := hp, ""
	if strings.HasPrefix(hp, "[") {
		end := strings.Index(hp, "]")
		if end < 0 {
			return false
		}
		host, port = hp[1:end], hp[end+1:]
		if net.ParseIP(host) == nil || !strings.Contains(host, ":") {
			return false
		}
		if port == "" {
			return true
		}
		if port[0] != ':' {
			return false
		}
		port = port[1:]
	} else if i := strings.LastIndex(hp, ":"); i >= 0 {
		host, port = hp[:i], hp[i+1:]
		if port == "" {
			return false
		}
	}
	if port != "" && (len(port) > 5 || strings.Trim(port, "0123456789") != "") {
		return false
	}
	return hostName.MatchString(host) || net.ParseIP(host).To4() != nil
}

// cleanSegments reports whether a slash-separated path has no empty, "."
// or ".." segments.
func cleanSegments(p string) bool {
	for _, seg := range strings.Split(p, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
	}
	return true
}

func hasControlOrSpace(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] == 0x7f {
			return true
		}
	}
	return false
}

// clip shortens untrusted text before it goes into a message.
func clip(s string) string {
	const max = 120
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}

// checkRepoPatterns reports the entries of a repository allowlist (env)
// that are not repository patterns; example shows valid ones.
func checkRepoPatterns(env, example string, patterns []string) []error {
	var errs []error
	for _, p := range patterns {
		if patternKind(p) != kindDestination {
			errs = append(errs, fmt.Errorf("%s: %q is not a repository pattern; use registry-host/path/*, such as %s", env, clip(p), example))
		} else if _, err := parseDestPattern(p); err != nil {
			errs = append(errs, fmt.Errorf("%s: %q: %w", env, clip(p), err))
		}
	}
	return errs
}
