package config

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/pflag"
)

// The helpers below borrow pflag's own Value implementations (through a
// throwaway flag set) so that environment variables parse exactly like flags,
// including for settings that have no flag.

func scratch(register func(fs *pflag.FlagSet)) pflag.Value {
	fs := pflag.NewFlagSet("", pflag.ContinueOnError)
	register(fs)
	return fs.Lookup("v").Value
}

// textValue is a flag value for string types, Secret and SecretURL
// included. String returns the raw value: redaction is the binder's job.
type textValue[T ~string] struct{ p *T }

func stringVar[T ~string](p *T, def T) pflag.Value {
	*p = def
	return textValue[T]{p}
}

func (v textValue[T]) String() string     { return string(*v.p) }
func (v textValue[T]) Type() string       { return "string" }
func (v textValue[T]) Set(s string) error { *v.p = T(s); return nil }

// queuesValue is a name=weight list, printed in a stable (sorted) order.
type queuesValue struct{ pflag.Value }

func queuesVar(p *map[string]int, def map[string]int) pflag.Value {
	return queuesValue{scratch(func(fs *pflag.FlagSet) { fs.StringToIntVar(p, "v", def, "") })}
}

func (v queuesValue) String() string {
	pairs := strings.Split(strings.Trim(v.Value.String(), "[]"), ",")
	slices.Sort(pairs)
	return strings.Join(pairs, ",")
}

func intVar(p *int, def int) pflag.Value {
	return scratch(func(fs *pflag.FlagSet) { fs.IntVar(p, "v", def, "") })
}

func boolVar(p *bool, def bool) pflag.Value {
	return scratch(func(fs *pflag.FlagSet) { fs.BoolVar(p, "v", def, "") })
}

func durationVar(p *time.Duration, def time.Duration) pflag.Value {
	return scratch(func(fs *pflag.FlagSet) { fs.DurationVar(p, "v", def, "") })
}

// sizeValue is a byte count written as "16MiB", "64MB" or "1048576".
type sizeValue struct{ p *int64 }

func sizeVar(p *int64, def int64) pflag.Value {
	*p = def
	return sizeValue{p}
}

func (v sizeValue) String() string { return humanize.IBytes(uint64(*v.p)) }
func (v sizeValue) Type() string   { return "size" }

func (v sizeValue) Set(s string) error {
	n, err := humanize.ParseBytes(s)
	if err != nil {
		return fmt.Errorf("not a size (try 16MiB): %w", err)
	}
	if n > 1<<62 {
		return fmt.Errorf("size %s is too large", s)
	}
	*v.p = int64(n)
	return nil
}
