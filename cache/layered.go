package cache

import (
	"context"
	"time"
)

// TTLGetter is implemented by caches that can report an entry's remaining
// time to live along with its value (Memory and Redis do). Layered uses it to
// fill its local layer for no longer than the shared entry has left.
type TTLGetter interface {
	GetWithTTL(ctx context.Context, key string) ([]byte, time.Duration, bool, error)
}

// Layered is a two-level Cache: a fast in-process Memory in front of a shared
// cache such as Redis. Reads try the local layer first; writes and deletes go
// to both. When the shared cache fails, its error (wrapping ErrUnavailable) is
// returned, but the local layer keeps working.
//
// A Delete reaches only this process's local layer; other instances keep
// their local copy until it expires, so the local TTL bounds their staleness
// (see WithLocalTTL).
type Layered struct {
	local    *Memory
	shared   Cache
	ttl      TTLGetter // shared as a TTLGetter, or nil
	localTTL time.Duration
}

// LayeredOption configures a Layered cache.
type LayeredOption func(*Layered)

// WithLocalTTL caps how long an entry stays in the local layer (d > 0). It
// also lets a shared hit fill the local layer when the shared cache cannot
// report remaining TTLs.
func WithLocalTTL(d time.Duration) LayeredOption {
	return func(l *Layered) { l.localTTL = d }
}

// NewLayered returns a cache reading local before shared. A local entry never
// outlives the TTL given to Set, nor the remaining TTL of the shared entry it
// was filled from.
func NewLayered(local *Memory, shared Cache, opts ...LayeredOption) *Layered {
	l := &Layered{local: local, shared: shared}
	l.ttl, _ = shared.(TTLGetter)
	for _, opt := range opts {
		opt(l)
	}
	return l
}

// Local returns the in-process layer, for example to drop an entry on an
// invalidation message from another instance.
func (l *Layered) Local() *Memory { return l.local }

// Shared returns the shared layer.
func (l *Layered) Shared() Cache { return l.shared }

// capTTL applies the local TTL cap.
func (l *Layered) capTTL(ttl time.Duration) time.Duration {
	if l.localTTL > 0 && ttl > l.localTTL {
		return l.localTTL
	}
	return ttl
}

// Get returns the local entry when there is one, else the shared entry,
// copying it into the local layer for its remaining TTL.
func (l *Layered) Get(ctx context.Context, key string) ([]byte, bool, error) {
	if v, ok, _ := l.local.Get(ctx, key); ok {
		return v, true, nil
	}
	var (
		v   []byte
		ttl time.Duration
		ok  bool
		err error
	)
	if l.ttl != nil {
		v, ttl, ok, err = l.ttl.GetWithTTL(ctx, key)
	} else {
		v, ok, err = l.shared.Get(ctx, key)
		ttl = l.localTTL // zero (no local fill) unless a cap was given
	}
	if err != nil || !ok {
		return nil, false, err
	}
	_ = l.local.Set(ctx, key, v, l.capTTL(ttl))
	return v, true, nil
}

// Set stores value in both layers. The local layer is written even when the
// shared one fails.
func (l *Layered) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if ttl <= 0 {
		return nil
	}
	_ = l.local.Set(ctx, key, value, l.capTTL(ttl))
	return l.shared.Set(ctx, key, value, ttl)
}

// Delete removes key from both layers. The local layer is cleared even when
// the shared one fails.
func (l *Layered) Delete(ctx context.Context, key string) error {
	_ = l.local.Delete(ctx, key)
	return l.shared.Delete(ctx, key)
}

// Ping reports whether the shared cache is reachable.
func (l *Layered) Ping(ctx context.Context) error { return l.shared.Ping(ctx) }

// Close drops the local entries and closes the shared cache.
func (l *Layered) Close() error {
	_ = l.local.Close()
	return l.shared.Close()
}
