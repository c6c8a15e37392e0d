// Package config loads, validates and redacts the typed configuration of each
// r8im process (worker, enqueue, r8im) from R8IM_* and ecosystem environment
// variables, overridable by command-line flags.
package config
