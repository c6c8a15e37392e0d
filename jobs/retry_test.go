package jobs

import (
	"errors"
	"testing"
	"time"

	"github.com/r8im/r8im/imageops"
)

func TestRetryDelayHonoursRetryAfter(t *testing.T) {
	base := func(int, error) time.Duration { return time.Second }
	f := retryDelay(base)
	plain := errors.New("connection reset")
	for _, tc := range []struct {
		err  error
		want time.Duration
	}{
		{plain, time.Second},
		{&imageops.RetryAfterError{After: 30 * time.Second, Err: plain}, 30 * time.Second},
		{&imageops.RetryAfterError{After: 100 * time.Millisecond, Err: plain}, time.Second}, // never shorter than the backoff
	} {
		if got := f(1, tc.err, nil); got != tc.want {
			t.Errorf("delay for %v = %s, want %s", tc.err, got, tc.want)
		}
	}
}
