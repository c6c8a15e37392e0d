package config

// Limits bound the weights tarballs an affix accepts (tar bombs).
type Limits struct {
	MaxWeightsSize int64 // total bytes of the files in a tarball
	MaxTarEntries  int
	MaxNameLength  int // bytes of an entry name or link target
}

// Defaults of Limits.
const (
	DefaultMaxWeightsSize = 1 << 40 // 1 TiB
	DefaultMaxTarEntries  = 1_000_000
	DefaultMaxNameLength  = 4096
)

func (l *Limits) bind(b *binder) {
	b.bind(sizeVar(&l.MaxWeightsSize, DefaultMaxWeightsSize), "max-weights-size", "", []string{"R8IM_MAX_WEIGHTS_SIZE"}, plain,
		"largest total size of the files in a weights tarball, e.g. 200GiB")
	b.bind(intVar(&l.MaxTarEntries, DefaultMaxTarEntries), "max-tar-entries", "", []string{"R8IM_MAX_TAR_ENTRIES"}, plain,
		"most entries a weights tarball may have")
	b.bind(intVar(&l.MaxNameLength, DefaultMaxNameLength), "max-name-length", "", []string{"R8IM_MAX_NAME_LENGTH"}, plain,
		"longest entry name or link target in a weights tarball, in bytes")
}

func (l *Limits) validate(b *binder) []Problem {
	var ps []Problem
	if l.MaxWeightsSize < 1 {
		ps = append(ps, b.problem("max-weights-size", "must be positive, got %d", l.MaxWeightsSize))
	}
	if l.MaxTarEntries < 1 {
		ps = append(ps, b.problem("max-tar-entries", "must be positive, got %d", l.MaxTarEntries))
	}
	if l.MaxNameLength < 100 || l.MaxNameLength > 1<<16 {
		ps = append(ps, b.problem("max-name-length", "must be between 100 and 65536, got %d", l.MaxNameLength))
	}
	return ps
}
