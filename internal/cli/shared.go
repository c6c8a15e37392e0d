package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/term"

	"github.com/r8im/r8im/config"
)

// ConnectRedis opens the client and checks that Redis answers, so a wrong
// REDIS_URL fails at once with a clear message instead of in every task.
func ConnectRedis(ctx context.Context, r config.Redis) (redis.UniversalClient, error) {
	quietRedis.Do(func() { redis.SetLogger(redisLogger{}) })
	rdb, err := r.NewClient()
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("the Redis server at %s does not answer (%v): start it, or point REDIS_URL at it", r.URL, err)
	}
	return rdb, nil
}

// CreatedTime parses a --created flag (RFC 3339); without one it takes
// $SOURCE_DATE_EPOCH, else now, so builds can be made reproducible.
func CreatedTime(flag string) (time.Time, error) {
	if flag != "" {
		t, err := time.Parse(time.RFC3339, flag)
		if err != nil {
			return time.Time{}, fmt.Errorf("--created %q is not an RFC 3339 time such as 2024-05-01T12:00:00Z", flag)
		}
		return t, nil
	}
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		secs, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q is not a number of seconds since 1970", s)
		}
		return time.Unix(secs, 0).UTC(), nil
	}
	return time.Now().UTC().Truncate(time.Second), nil
}

// IsTerminal reports whether w is a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

var quietRedis sync.Once

// redisLogger sends go-redis's own messages (every failed dial of its pool)
// to slog at debug level: the errors our calls return already say what
// went wrong, once.
type redisLogger struct{}

func (redisLogger) Printf(ctx context.Context, format string, v ...any) {
	slog.DebugContext(ctx, fmt.Sprintf(format, v...), "component", "go-redis")
}
