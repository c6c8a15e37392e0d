package retry_test

import (
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/r8im/r8im/internal/retry"
)

type typed struct{}

func (typed) Error() string   { return "typed" }
func (typed) Permanent() bool { return true }

func TestIsPermanent(t *testing.T) {
	sentinel := retry.New("bad input")
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"plain", errors.New("connection reset"), false},
		{"marked", retry.Permanent(errors.New("refused")), true},
		{"sentinel wrapped", fmt.Errorf("opening x: %w", sentinel), true},
		{"typed", fmt.Errorf("a: %w", typed{}), true},
		{"joined", errors.Join(errors.New("x"), sentinel), true},
		{"after", &retry.AfterError{After: time.Second, Err: errors.New("429")}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := retry.IsPermanent(tc.err); got != tc.want {
				t.Errorf("IsPermanent(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
	if !errors.Is(fmt.Errorf("x: %w", sentinel), sentinel) {
		t.Error("a sentinel does not match itself through a wrap")
	}
	if retry.Permanent(nil) != nil {
		t.Error("Permanent(nil) is not nil")
	}
	if e := errors.New("e"); retry.Permanent(e).Error() != "e" || !errors.Is(retry.Permanent(e), e) {
		t.Error("Permanent changes the text or loses the chain")
	}
}

func TestAfter(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		v    string
		want time.Duration
	}{
		{"", 0}, {"2", 2 * time.Second}, {" 7 ", 7 * time.Second}, {"-3", 0}, {"soon", 0},
		{"99999999999", retry.MaxAfter},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
	} {
		if got := retry.ParseAfter(tc.v, now); got != tc.want {
			t.Errorf("ParseAfter(%q) = %s, want %s", tc.v, got, tc.want)
		}
	}
	err := fmt.Errorf("push: %w", &retry.AfterError{After: 2 * time.Second, Err: errors.New("429")})
	if d, ok := retry.After(err); !ok || d != 2*time.Second {
		t.Errorf("After = %s, %v", d, ok)
	}
	if _, ok := retry.After(errors.New("x")); ok {
		t.Error("After found a pause in a plain error")
	}
}
