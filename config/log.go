package config

import (
	"log/slog"
)

// Log selects the level and format of a process's slog output.
type Log struct {
	Level  string // debug, info, warn, error
	Format string // auto (text on a terminal, JSON otherwise), json, text
}

func (l *Log) bind(b *binder) {
	b.bind(stringVar(&l.Level, "info"), "log-level", "", []string{"R8IM_LOG_LEVEL"}, plain,
		"log level: debug, info, warn or error")
	b.bind(stringVar(&l.Format, "auto"), "log-format", "", []string{"R8IM_LOG_FORMAT"}, plain,
		"log format: auto (text on a terminal, else JSON), json or text")
}

// SlogLevel returns the parsed level; Validate has already rejected bad ones.
func (l Log) SlogLevel() slog.Level {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(l.Level))
	return lvl
}

func (l *Log) validate(b *binder) []Problem {
	var ps []Problem
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(l.Level)); err != nil {
		ps = append(ps, b.problem("log-level", "%q is not a level; use debug, info, warn or error", l.Level))
	}
	switch l.Format {
	case "auto", "json", "text":
	default:
		ps = append(ps, b.problem("log-format", "%q is not a format; use auto, json or text", l.Format))
	}
	return ps
}
