package cache

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultRedisTimeout bounds dialing, each read and write, and the wait for a
// pooled connection, so that a dead Redis costs a request a short delay rather
// than a stall. A URL query (dial_timeout=...) overrides it.
const DefaultRedisTimeout = 500 * time.Millisecond

// Redis is a Cache shared by every instance, backed by a Redis server through
// go-redis. Every backend error wraps ErrUnavailable; a missing key is a miss,
// not an error. Redis is safe for concurrent use.
type Redis struct {
	client *redis.Client
}

// NewRedis connects to the Redis server named by rawURL
// (redis://[user:password@]host:port/db, or rediss:// for TLS) and checks it
// answers PING within ctx. The returned error wraps ErrUnavailable when the
// server cannot be reached; it never contains the URL's password. The first
// call routes go-redis's own log lines to slog at Debug (see SetRedisLogger).
func NewRedis(ctx context.Context, rawURL string) (*Redis, error) {
	o, err := redis.ParseURL(rawURL)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) { // its text would repeat the URL with its password
			err = ue.Err
		}
		return nil, fmt.Errorf("cache: invalid redis URL: %v", err)
	}
	if o.DialTimeout == 0 {
		o.DialTimeout = DefaultRedisTimeout
	}
	if o.ReadTimeout == 0 {
		o.ReadTimeout = DefaultRedisTimeout
	}
	if o.WriteTimeout == 0 {
		o.WriteTimeout = DefaultRedisTimeout
	}
	if o.PoolTimeout == 0 {
		o.PoolTimeout = DefaultRedisTimeout
	}
	if o.MaxRetries == 0 {
		// One retry replaces a pooled connection that went stale (a Redis
		// restart) without doubling the wait more than once.
		o.MaxRetries = 1
	}
	if o.DialerRetries == 0 {
		// go-redis otherwise dials five times, 100ms apart, before failing a
		// command; a cache must give up at once and let the caller go on.
		o.DialerRetries = 1
	}
	installRedisLogger()
	c := redis.NewClient(o)
	if err := c.Ping(ctx).Err(); err != nil {
		_ = c.Close()
		return nil, unavailable("ping", err)
	}
	return &Redis{client: c}, nil
}

// unavailable wraps a backend error so that errors.Is finds both
// ErrUnavailable and the cause (for example context.DeadlineExceeded).
func unavailable(op string, err error) error {
	return fmt.Errorf("%w: redis %s: %w", ErrUnavailable, op, err)
}

// Client returns the underlying go-redis client, for pub/sub and locks.
func (r *Redis) Client() *redis.Client { return r.client }

// Get returns the value stored under key, or false on a miss.
func (r *Redis) Get(ctx context.Context, key string) ([]byte, bool, error) {
	v, err := r.client.Get(ctx, key).Bytes()
	switch {
	case errors.Is(err, redis.Nil):
		return nil, false, nil
	case err != nil:
		return nil, false, unavailable("get", err)
	}
	return v, true, nil
}

// GetWithTTL is Get that also returns the entry's remaining time to live (its
// PTTL), read in the same round trip. The duration is zero when the key exists
// but has no expiry or vanished between the two reads.
func (r *Redis) GetWithTTL(ctx context.Context, key string) ([]byte, time.Duration, bool, error) {
	pipe := r.client.Pipeline()
	get := pipe.Get(ctx, key)
	pttl := pipe.PTTL(ctx, key)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, 0, false, unavailable("get", err)
	}
	v, err := get.Bytes()
	switch {
	case errors.Is(err, redis.Nil):
		return nil, 0, false, nil
	case err != nil:
		return nil, 0, false, unavailable("get", err)
	}
	ttl, err := pttl.Result()
	if err != nil {
		return nil, 0, false, unavailable("pttl", err)
	}
	return v, max(ttl, 0), true, nil
}

// Set stores value under key with SET ... PX ttl. Redis counts whole
// milliseconds, so ttl is truncated to one; a ttl under 1ms stores nothing.
func (r *Redis) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	ttl = ttl.Truncate(time.Millisecond)
	if ttl <= 0 {
		return nil
	}
	if err := r.client.Set(ctx, key, value, ttl).Err(); err != nil {
		return unavailable("set", err)
	}
	return nil
}

// Delete removes key; a missing key is not an error.
func (r *Redis) Delete(ctx context.Context, key string) error {
	if err := r.client.Del(ctx, key).Err(); err != nil {
		return unavailable("del", err)
	}
	return nil
}

// TTL returns the remaining time to live of key (its PTTL): negative when the
// key is missing (-2ns) or has no expiry (-1ns), as Redis reports it.
func (r *Redis) TTL(ctx context.Context, key string) (time.Duration, error) {
	d, err := r.client.PTTL(ctx, key).Result()
	if err != nil {
		return 0, unavailable("pttl", err)
	}
	return d, nil
}

// Ping reports whether Redis answers PING.
func (r *Redis) Ping(ctx context.Context) error {
	if err := r.client.Ping(ctx).Err(); err != nil {
		return unavailable("ping", err)
	}
	return nil
}

// Close closes the connection pool.
func (r *Redis) Close() error { return r.client.Close() }
