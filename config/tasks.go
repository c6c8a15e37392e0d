package config

import "time"

// Tasks sets how long each task type may run and how often it is retried.
// The enqueuer applies them: asynq stores both with the task.
type Tasks struct {
	AffixTimeout  time.Duration
	AffixMaxRetry int
	RemixTimeout  time.Duration
	RemixMaxRetry int
	ZstdTimeout   time.Duration
	ZstdMaxRetry  int
}

func (t *Tasks) bind(b *binder) {
	b.bind(durationVar(&t.AffixTimeout, 2*time.Hour), "affix-timeout", "", []string{"R8IM_AFFIX_TIMEOUT"}, plain, "how long an affix task may run")
	b.bind(intVar(&t.AffixMaxRetry, 10), "affix-max-retry", "", []string{"R8IM_AFFIX_MAX_RETRY"}, plain, "retries of a failing affix task")
	b.bind(durationVar(&t.RemixTimeout, 15*time.Minute), "remix-timeout", "", []string{"R8IM_REMIX_TIMEOUT"}, plain, "how long a remix task may run")
	b.bind(intVar(&t.RemixMaxRetry, 10), "remix-max-retry", "", []string{"R8IM_REMIX_MAX_RETRY"}, plain, "retries of a failing remix task")
	b.bind(durationVar(&t.ZstdTimeout, 2*time.Hour), "zstd-timeout", "", []string{"R8IM_ZSTD_TIMEOUT"}, plain, "how long a zstd task may run")
	b.bind(intVar(&t.ZstdMaxRetry, 5), "zstd-max-retry", "", []string{"R8IM_ZSTD_MAX_RETRY"}, plain, "retries of a failing zstd task")
}

func (t *Tasks) validate(b *binder) []Problem {
	var ps []Problem
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{{"affix-timeout", t.AffixTimeout}, {"remix-timeout", t.RemixTimeout}, {"zstd-timeout", t.ZstdTimeout}} {
		if d.v < time.Minute {
			ps = append(ps, b.problem(d.flag, "must be at least 1m, got %s", d.v))
		}
	}
	for _, r := range []struct {
		flag string
		v    int
	}{{"affix-max-retry", t.AffixMaxRetry}, {"remix-max-retry", t.RemixMaxRetry}, {"zstd-max-retry", t.ZstdMaxRetry}} {
		if r.v < 0 || r.v > 100 {
			ps = append(ps, b.problem(r.flag, "must be between 0 and 100, got %d", r.v))
		}
	}
	return ps
}
