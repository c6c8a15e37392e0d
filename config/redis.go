package config

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// DefaultRedisURL is used when REDIS_URL is not set.
const DefaultRedisURL = "redis://127.0.0.1:6379/0"

// Redis locates the Redis server holding the queues and the records.
type Redis struct {
	// URL is redis://[user:password@]host:port/db, rediss:// for TLS, or
	// redis-sentinel://[:password@]host:port[,host:port...][/db]?master=NAME
	// for Redis Sentinel (the form asynq documents). The password serves
	// both the Sentinels and the master. go-redis query options
	// (dial_timeout, pool_size, ...) work in every form.
	URL SecretURL
}

func (r *Redis) bind(b *binder) {
	b.bind(stringVar(&r.URL, DefaultRedisURL), "redis-url", "", []string{"REDIS_URL"}, urlSecret,
		"Redis URL: redis://, rediss:// (TLS) or redis-sentinel://host:port,host:port/db?master=NAME")
}

func (r *Redis) validate(b *binder) []Problem {
	if _, _, err := r.Options(); err != nil {
		return []Problem{b.problem("redis-url", "%v", err)}
	}
	return nil
}

// NewClient opens a client for URL: a plain client, or a failover client
// that follows the Sentinels' master for redis-sentinel://.
func (r Redis) NewClient() (redis.UniversalClient, error) {
	plain, failover, err := r.Options()
	if err != nil {
		return nil, err
	}
	if failover != nil {
		return redis.NewFailoverClient(failover), nil
	}
	return redis.NewClient(plain), nil
}

// Options parses URL with go-redis's own parsers. Exactly one of plain (for
// redis://, rediss://) and failover (for redis-sentinel://) is non-nil when
// err is nil. Errors never quote the URL, since it may hold a password.
func (r Redis) Options() (plain *redis.Options, failover *redis.FailoverOptions, err error) {
	raw := string(r.URL)
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return nil, nil, errors.New("not a URL; use redis://host:6379/0")
	}
	switch scheme {
	case "redis", "rediss":
		plain, err = redis.ParseURL(raw)
		if err == nil && plain.DB < 0 {
			err = fmt.Errorf("invalid database number %q: must not be negative", strconv.Itoa(plain.DB))
		}
	case "redis-sentinel":
		failover, err = parseSentinel(rest)
	default:
		return nil, nil, fmt.Errorf("unsupported scheme %q; use redis://, rediss:// or redis-sentinel://", scheme)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("parsing %s: %w", r.URL, withoutURL(err))
	}
	return plain, failover, nil
}

// parseSentinel rewrites asynq's redis-sentinel form into the form
// redis.ParseFailoverURL reads (first Sentinel as the host, the others as
// addr= parameters, master= as master_name=) and parses that.
func parseSentinel(rest string) (*redis.FailoverOptions, error) {
	end := strings.IndexAny(rest, "/?")
	if end < 0 {
		end = len(rest)
	}
	authority, tail := rest[:end], rest[end:]
	userinfo, hosts := "", authority
	if at := strings.LastIndex(authority, "@"); at >= 0 {
		userinfo, hosts = authority[:at+1], authority[at+1:]
	}
	addrs := strings.Split(hosts, ",")
	for _, a := range addrs {
		if a == "" {
			return nil, errors.New("empty sentinel address; list them as host:port,host:port")
		}
	}
	path, rawQuery, _ := strings.Cut(tail, "?")
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return nil, fmt.Errorf("invalid query: %w", err)
	}
	if m := q.Get("master"); m != "" {
		q.Del("master")
		q.Set("master_name", m)
	}
	if q.Get("master_name") == "" {
		return nil, errors.New("redis-sentinel needs ?master=NAME (the Sentinel master name)")
	}
	for _, a := range addrs[1:] {
		q.Add("addr", a)
	}
	o, err := redis.ParseFailoverURL("redis://" + userinfo + addrs[0] + path + "?" + q.Encode())
	if err != nil {
		return nil, err
	}
	if o.DB < 0 {
		return nil, fmt.Errorf("invalid database number %q: must not be negative", strconv.Itoa(o.DB))
	}
	if o.Password == "" {
		o.Username, o.Password = o.SentinelUsername, o.SentinelPassword
	}
	return o, nil
}

// withoutURL drops the URL that net/url errors quote in full, keeping the
// reason ("invalid port", "invalid URL escape").
func withoutURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
