package imageops

import (
	"archive/tar"
	"fmt"
	"path"
	"strings"
)

const (
	// maxSymlinks is how many symlinks one path resolution may follow, as
	// Linux's MAXSYMLINKS (ELOOP beyond).
	maxSymlinks = 40
	// maxLinkBytes bounds the memory the symlinks of one publish may take
	// (their paths, entry names and targets are kept in full to be resolved).
	maxLinkBytes = 32 << 20
	// maxResolveSteps bounds the path components the resolutions of one
	// tarball may walk (a second or so): links through chains of long
	// links, many times over, would otherwise take hours.
	maxResolveSteps = 20_000_000
)

// LinkSet is what the weights layers of one publish hold, as far as links
// go: every symlink (path and target) and the kind of every path, in the
// order the entries come. The tar policy resolves each entry's path, each
// symlink and each hard link through it the way the kernel resolves paths
// in the unpacked image — relative targets from the link's directory,
// absolute ones from the image root, at most 40 symlinks per resolution —
// instead of cleaning their text, so that a link through another link
// ("s -> .", then "e -> s/s/../../../etc/passwd") cannot leave the target.
//
// One LinkSet is fed every entry of every weights layer of a publish, in
// layer order (TarPolicy.Links): a link is resolved through the links of
// earlier layers too, and at the end of each tarball every symlink seen so
// far is resolved again against what the later entries made of the tree.
// It does not know the base image's files: links there are not seen.
//
// A LinkSet is not safe for concurrent use. Its zero value is not usable:
// call NewLinkSet.
type LinkSet struct {
	// symlinks maps an image path (clean, relative to the root) to the
	// symlink there.
	symlinks map[string]*linkEntry
	// order lists the symlinks in the order they came, for verify.
	order []*linkEntry
	// kinds maps every path an entry wrote (hashed, to bound memory) to
	// its tar type flag, for hard links.
	kinds map[pathKey]byte
	bytes int // kept in symlinks: paths, entry names, targets
	steps int // path components walked by resolve in this tarball
	added int // symlinks added by this tarball
}

// linkEntry is one symlink: path in the image, the entry name it came
// from (for messages), its target, and whether the policy refused it.
type linkEntry struct {
	path, entry, link string
	earlier           bool // from an earlier tarball of the publish
	refused           bool
}

// NewLinkSet returns an empty LinkSet: the state before the first weights
// layer of a publish.
func NewLinkSet() *LinkSet {
	return &LinkSet{symlinks: map[string]*linkEntry{}, kinds: map[pathKey]byte{}}
}

// Clone returns a copy that later entries of either do not change, e.g. to
// run a layer's pass again (a retried upload) from the state before it.
func (s *LinkSet) Clone() *LinkSet {
	c := &LinkSet{symlinks: make(map[string]*linkEntry, len(s.symlinks)), kinds: make(map[pathKey]byte, len(s.kinds)), bytes: s.bytes}
	for k, v := range s.kinds {
		c.kinds[k] = v
	}
	for _, l := range s.order {
		cp := *l
		c.order = append(c.order, &cp)
		c.symlinks[cp.path] = &cp
	}
	return c
}

// startTarball marks the symlinks seen so far as coming from earlier
// tarballs, for messages, and starts the tarball's resolution budget.
func (s *LinkSet) startTarball() {
	for _, l := range s.order {
		l.earlier = true
	}
	s.steps, s.added = 0, 0
}

// kind returns the type flag of the entry last written at p.
func (s *LinkSet) kind(p string) (byte, bool) {
	k, ok := s.kinds[keyOf(p)]
	return k, ok
}

func (s *LinkSet) symlink(p string) *linkEntry { return s.symlinks[p] }

// add records an entry written at p (clean, relative to the root). A
// symlink (typ TypeSymlink) keeps its target link and the entry name it
// came from; it returns false when the set holds too many symlink bytes.
func (s *LinkSet) add(p string, typ byte, entry, link string) bool {
	s.kinds[keyOf(p)] = typ
	// Its parents are directories from now on, whether or not an entry
	// said so: an unpacker creates them.
	for i := strings.LastIndexByte(p, '/'); i > 0; i = strings.LastIndexByte(p[:i], '/') {
		k := keyOf(p[:i])
		if _, ok := s.kinds[k]; ok {
			break // its parents were recorded with it
		}
		s.kinds[k] = tar.TypeDir
	}
	if typ != tar.TypeSymlink {
		return true
	}
	n := len(p) + len(entry) + len(link)
	if s.bytes+n > maxLinkBytes {
		return false
	}
	s.bytes += n
	l := &linkEntry{path: p, entry: entry, link: link}
	s.symlinks[p] = l
	s.order = append(s.order, l)
	s.added++
	return true
}

// resolution is where a path leads in the image.
type resolution struct {
	path    string // clean, relative to the root ("." is the root); unset after a loop
	via     string // the first symlink followed, "" when none
	via2    string // the second one, "" when none
	escapes bool   // a ".." climbed above the image root (path is where the kernel, staying at /, lands)
	loop    bool   // more than maxSymlinks symlinks were followed
	budget  bool   // maxResolveSteps ran out: not resolved
	refused bool   // a symlink the policy refused was followed
}

// resolve walks p from the directory from (clean, relative to the root;
// an absolute p starts at the root) as the kernel would: "." is skipped,
// ".." goes to the parent, and a symlink of the set met on any component
// (on the last one too when follow) is replaced by its target. Paths
// that are not symlinks of the set are taken as directories, so a path
// this returns does not exist yet or is one the kernel would refuse
// (ENOTDIR) rather than reach elsewhere. A ".." at the image root stays
// there, as in the kernel, and is reported as an escape: an unpacker that
// does not confine paths to the root would leave the image there.
func (s *LinkSet) resolve(from, p string, follow bool) resolution {
	var r resolution
	// cur is the path walked so far, relative to the root ("" for it),
	// with ends[i] the length of its first i components; appending and
	// dropping a component costs its own length only.
	var cur []byte
	var ends []int
	if !strings.HasPrefix(p, "/") && from != "." && from != "" {
		for _, c := range strings.Split(from, "/") {
			cur, ends = appendComponent(cur, ends, c)
		}
	}
	stack := pushComponents(nil, p)
	followed := 0
	for len(stack) > 0 {
		if s.steps++; s.steps > maxResolveSteps {
			r.budget = true
			return r
		}
		c := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(ends) == 0 {
				r.escapes = true
			} else {
				cur, ends = dropComponent(cur, ends)
			}
			continue
		}
		cur, ends = appendComponent(cur, ends, c)
		l := s.symlinks[string(cur)]
		if l == nil || !follow && len(stack) == 0 {
			// A trailing "/" or "/." leaves components on the stack, so a
			// last link is followed then, as the kernel does.
			continue
		}
		followed++
		if followed > maxSymlinks {
			r.loop = true
			return r
		}
		if r.via == "" {
			r.via = l.path
		} else if r.via2 == "" && l.path != r.via {
			r.via2 = l.path
		}
		r.refused = r.refused || l.refused
		cur, ends = dropComponent(cur, ends) // the link's directory
		if strings.HasPrefix(l.link, "/") {
			cur, ends = cur[:0], ends[:0]
		}
		stack = pushComponents(stack, l.link)
	}
	r.path = string(cur)
	if r.path == "" {
		r.path = "."
	}
	return r
}

func appendComponent(cur []byte, ends []int, c string) ([]byte, []int) {
	if len(cur) > 0 {
		cur = append(cur, '/')
	}
	cur = append(cur, c...)
	return cur, append(ends, len(cur))
}

func dropComponent(cur []byte, ends []int) ([]byte, []int) {
	ends = ends[:len(ends)-1]
	if len(ends) == 0 {
		return cur[:0], ends
	}
	return cur[:ends[len(ends)-1]], ends
}

// firstLink returns the first symlink of the set that a path p (relative
// to the root, as written: ".." allowed) goes through before its last
// component, or "". It follows no link, so it costs the length of p.
func (s *LinkSet) firstLink(p string) string {
	if len(s.symlinks) == 0 {
		return ""
	}
	var cur []byte
	var ends []int
	parts := strings.Split(strings.TrimRight(p, "/"), "/")
	for i, c := range parts {
		switch c {
		case "", ".":
			continue
		case "..":
			if len(ends) > 0 {
				cur, ends = dropComponent(cur, ends)
			}
			continue
		}
		cur, ends = appendComponent(cur, ends, c)
		if l := s.symlinks[string(cur)]; l != nil && i < len(parts)-1 {
			return l.path
		}
	}
	return ""
}

// pushComponents pushes the components of p onto stack so that the first
// one is popped first.
func pushComponents(stack []string, p string) []string {
	parts := strings.Split(p, "/")
	for i := len(parts) - 1; i >= 0; i-- {
		stack = append(stack, parts[i])
	}
	return stack
}

// where describes a resolution for a message: "/etc/passwd", with the
// first symlink followed other than self (the link being resolved).
func (r resolution) where(self string) string {
	s := "/" + strings.TrimPrefix(r.path, ".")
	via := r.via
	if via == self {
		via = r.via2
	}
	if via != "" {
		s += fmt.Sprintf(" (following the symlink /%s)", via)
	}
	return s
}

// linkVerdict checks where the symlink at p with target link leads: both
// its text, cleaned from the link's directory (what tools that do not
// follow links see), and res, its resolution through the set (what the
// kernel does), must stay in the target, or in the image when outside is
// allowed. It returns "" or the reason the link is refused.
func (rw *rewriter) linkVerdict(p, link string, res resolution, what string) Violation {
	textual := path.Clean("/" + path.Dir(p) + "/" + link)
	if strings.HasPrefix(link, "/") {
		textual = path.Clean(link)
	}
	hint := fmt.Sprintf("point it inside %s", rw.target)
	switch {
	case res.budget:
		return entryFault(fmt.Sprintf("%s to %s, which r8im did not resolve: resolving the links of these weights took more than %d steps (long chains of long links); simplify them", what, quoteEntry(link), maxResolveSteps))
	case res.loop:
		return entryFault(fmt.Sprintf("%s to %s, which does not resolve: it goes through more than %d symlinks (a loop?); r8im refuses links it cannot resolve", what, quoteEntry(link), maxSymlinks))
	case res.escapes && rw.allowOutside:
		return entryFault(fmt.Sprintf("%s to %s, which climbs above the image root through \"..\" on its way to %s; point it inside the image", what, quoteEntry(link), res.where(p)))
	case res.escapes:
		return outsideTarget(fmt.Sprintf("%s to %s, which resolves to %s outside the target %s, climbing above the image root through \"..\" on the way; %s", what, quoteEntry(link), res.where(p), rw.target, hint))
	case rw.allowOutside:
		return Violation{}
	case !rw.inTarget(rootRel(textual)):
		return outsideTarget(fmt.Sprintf("%s to %s, which resolves to %s outside the target %s; %s", what, quoteEntry(link), textual, rw.target, hint))
	case !rw.inTarget(res.path):
		return outsideTarget(fmt.Sprintf("%s to %s, which resolves to %s outside the target %s; %s", what, quoteEntry(link), res.where(p), rw.target, hint))
	}
	return Violation{}
}

// verifyLinks resolves every symlink of the set again, now that the whole
// tarball is in: a later entry (a symlink made where an earlier link's
// path goes, "e -> s/s/../../../etc/passwd" then "s -> .") changes where
// the earlier link leads. It refuses those that now leave the target.
// Resolutions depend on the symlinks only: without a new one, none changed.
func (rw *rewriter) verifyLinks() {
	if rw.links.added == 0 {
		return
	}
	for _, l := range rw.links.order {
		if l.refused {
			continue
		}
		res := rw.links.resolve(".", l.path, true)
		v := rw.linkVerdict(l.path, l.link, res, "it is a symlink")
		if v.Reason == "" || res.refused {
			continue // fine, or through a link refused already
		}
		l.refused = true
		entry := l.entry
		if l.earlier {
			entry = "/" + l.path
			v.Reason += "; it comes from an earlier weights layer, and the entries of this one change where it leads"
		} else {
			v.Reason += " once the later entries of the weights are in place"
		}
		rw.refuse(entry, v)
	}
}

// rootRel turns a clean absolute path into one relative to the root ("."
// for the root itself).
func rootRel(abs string) string {
	if rel := strings.TrimPrefix(abs, "/"); rel != "" {
		return rel
	}
	return "."
}
