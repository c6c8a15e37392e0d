package testenv

import (
	"testing"
	"time"
)

// Eventually polls cond until it reports ok, and fails the test with what,
// the timeout and the last state cond described if timeout passes first.
//
// cond runs on the test's goroutine: at once, then after a pause that
// starts at 10ms and doubles up to 100ms, so a quick condition costs little
// latency and a slow one little CPU. It may call t.Fatal itself (say, when a
// process it waits for has ended); it should return a state that tells what
// is wrong, such as the record or the error it saw:
//
//	var rec *storage.Record
//	var err error
//	testenv.Eventually(t, time.Minute, "task "+id+" to finish", func() (bool, string) {
//		rec, err = records.Get(ctx, id)
//		return err == nil && rec.State == storage.StateSucceeded, fmt.Sprintf("%+v, %v", rec, err)
//	})
//
// Eventually is for waiting on what another goroutine or process does; it
// is not a way to let time pass.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() (ok bool, state string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	pause := 10 * time.Millisecond
	for {
		ok, state := cond()
		if ok {
			return
		}
		if !time.Now().Before(deadline) {
			t.Fatalf("waiting for %s: not so after %s; last state: %s", what, timeout, state)
			return
		}
		time.Sleep(pause)
		pause = min(2*pause, 100*time.Millisecond)
	}
}
