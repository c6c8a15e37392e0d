package testenv_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/r8im/r8im/internal/testenv"
)

// fatalRecorder is a testing.TB whose Fatalf records the message and
// returns, so that a failing Eventually can be observed.
type fatalRecorder struct {
	testing.TB
	fatal []string
}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.fatal = append(r.fatal, fmt.Sprintf(format, args...))
}

func TestEventually(t *testing.T) {
	t.Run("returns once the condition holds", func(t *testing.T) {
		r := &fatalRecorder{TB: t}
		calls := 0
		testenv.Eventually(r, time.Minute, "the third call", func() (bool, string) {
			calls++
			return calls == 3, fmt.Sprintf("call %d", calls)
		})
		if calls != 3 || len(r.fatal) != 0 {
			t.Errorf("%d calls, failures %q; want 3 calls and no failure", calls, r.fatal)
		}
	})
	t.Run("fails with what, the timeout and the last state", func(t *testing.T) {
		r := &fatalRecorder{TB: t}
		calls := 0
		testenv.Eventually(r, 50*time.Millisecond, "the moon to turn blue", func() (bool, string) {
			calls++
			return false, fmt.Sprintf("grey after %d looks", calls)
		})
		if len(r.fatal) != 1 {
			t.Fatalf("failures %q; want exactly one", r.fatal)
		}
		msg := r.fatal[0]
		for _, want := range []string{"the moon to turn blue", "50ms", fmt.Sprintf("grey after %d looks", calls)} {
			if !strings.Contains(msg, want) {
				t.Errorf("failure %q does not say %q", msg, want)
			}
		}
		if calls < 2 {
			t.Errorf("the condition ran %d times before failing; want it polled", calls)
		}
	})
	t.Run("looks once even with no time left", func(t *testing.T) {
		r := &fatalRecorder{TB: t}
		calls := 0
		testenv.Eventually(r, 0, "anything", func() (bool, string) { calls++; return true, "" })
		if calls != 1 || len(r.fatal) != 0 {
			t.Errorf("%d calls, failures %q; want one call that succeeds", calls, r.fatal)
		}
	})
}
