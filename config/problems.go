package config

import (
	"fmt"
	"strings"
)

// Problem is one thing wrong with a configuration, naming the environment
// variable or flag that fixes it.
type Problem struct {
	Setting string // e.g. "R8IM_CONCURRENCY or --concurrency"
	Message string
}

func (p Problem) String() string { return p.Setting + ": " + p.Message }

// ValidationError lists every problem found, so an operator fixes them all in
// one round instead of one per restart.
type ValidationError struct {
	Problems []Problem
}

func (e *ValidationError) Error() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "invalid configuration (%d problem", len(e.Problems))
	if len(e.Problems) != 1 {
		sb.WriteString("s")
	}
	sb.WriteString("):")
	for _, p := range e.Problems {
		sb.WriteString("\n  - ")
		sb.WriteString(p.String())
	}
	return sb.String()
}

// asError returns nil for an empty list, so callers can `return asError(ps)`.
func asError(ps []Problem) error {
	if len(ps) == 0 {
		return nil
	}
	return &ValidationError{Problems: ps}
}
