package cache

import (
	"context"
	"log/slog"
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
// Without WithInvalidation, a Delete reaches only this process's local layer;
// other instances keep their local copy until it expires, so the local TTL
// bounds their staleness (see WithLocalTTL).
//
// With WithInvalidation (and a *Redis shared cache), deletions reach every
// instance sharing the Redis. Each Delete is published on a Redis pub/sub
// channel, and every instance runs one subscriber that drops the announced
// keys from its local layer, within milliseconds. The subscriber pings Redis
// when the channel is quiet, so a silently dead subscription is noticed
// within about a second. While the subscription is down, invalidations can be
// missed, so:
//
//   - Get asks Redis first and does not fill the local layer: with Redis
//     answering, no local entry is served, and none can be stale.
//   - When Redis does not answer, Get serves the local entry if there is one
//     (SPEC §5: with Redis down the server keeps serving). Such an entry may
//     have been deleted by another instance meanwhile; it is served at most
//     until it expires or Redis returns, whichever comes first.
//   - When the subscription is established again, the whole local layer is
//     cleared, and local-first reads resume.
//
// Together these guarantee that, while Redis is up, no instance serves an
// entry for more than about a second after another instance deleted it. An
// overwrite with Set is not announced: a changed value should be deleted
// first.
type Layered struct {
	local    *Memory
	shared   Cache
	ttl      TTLGetter // shared as a TTLGetter, or nil
	localTTL time.Duration

	channel string       // invalidation channel; "" without WithInvalidation
	log     *slog.Logger // nil: slog.Default()
	inval   *invalidator // nil without invalidation
}

// LayeredOption configures a Layered cache.
type LayeredOption func(*Layered)

// WithLocalTTL caps how long an entry stays in the local layer (d > 0). It
// also lets a shared hit fill the local layer when the shared cache cannot
// report remaining TTLs.
func WithLocalTTL(d time.Duration) LayeredOption {
	return func(l *Layered) { l.localTTL = d }
}

// WithInvalidation makes deletions reach the local layer of every instance
// sharing the Redis, through the pub/sub channel named channel
// (DefaultInvalidationChannel when empty); see Layered. Every instance of a
// cluster must use the same channel. NewLayered then starts one subscriber
// goroutine, which Close stops. The option has no effect unless the shared
// cache is a *Redis.
func WithInvalidation(channel string) LayeredOption {
	if channel == "" {
		channel = DefaultInvalidationChannel
	}
	return func(l *Layered) { l.channel = channel }
}

// WithLogger sets the logger for the invalidation subscriber's state changes
// (lost, retrying); nil means slog.Default().
func WithLogger(log *slog.Logger) LayeredOption {
	return func(l *Layered) { l.log = log }
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
	if r, ok := shared.(*Redis); ok && l.channel != "" {
		log := l.log
		if log == nil {
			log = slog.Default()
		}
		l.inval = newInvalidator(r, l.channel, local, log)
	}
	return l
}

// Subscribed reports whether the invalidation subscription is established,
// that is whether Get may serve local entries while Redis answers. It is
// always false without WithInvalidation.
func (l *Layered) Subscribed() bool { return l.inval != nil && l.inval.up.Load() }

// Local returns the in-process layer, for diagnostics and tests. Entries
// deleted through it are not announced to other instances.
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
// copying it into the local layer for its remaining TTL. While the
// invalidation subscription is down it reads the shared entry first and falls
// back to the local one only when the shared cache fails (see Layered).
func (l *Layered) Get(ctx context.Context, key string) ([]byte, bool, error) {
	iv := l.inval
	if iv != nil && !iv.up.Load() {
		return l.getUnsubscribed(ctx, key)
	}
	if v, ok, _ := l.local.Get(ctx, key); ok {
		return v, true, nil
	}
	var epoch uint64
	if iv != nil {
		epoch = iv.epoch.Load()
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
	if iv != nil && iv.epoch.Load() != epoch {
		// An invalidation, perhaps of this key, arrived after the shared
		// read: the value may be stale already. The subscriber bumps the
		// epoch before it deletes, so either this check sees the bump or
		// the subscriber's delete comes after the fill.
		_ = l.local.Delete(ctx, key)
	}
	return v, true, nil
}

// getUnsubscribed is Get while invalidations may be missed: the shared cache
// is the authority when it answers, and the local layer is neither read nor
// filled then.
func (l *Layered) getUnsubscribed(ctx context.Context, key string) ([]byte, bool, error) {
	v, ok, err := l.shared.Get(ctx, key)
	if err == nil {
		return v, ok, nil
	}
	if v, ok, _ := l.local.Get(ctx, key); ok {
		return v, true, nil
	}
	return nil, false, err
}

// GetCurrent is Get for values whose staleness matters more than the cost
// of asking their source again (a revocation, a deactivation): while
// invalidations may be missed, a failing shared cache is reported as an
// error instead of answered from the local layer, so the caller reads the
// source. With the subscription up it is Get.
func (l *Layered) GetCurrent(ctx context.Context, key string) ([]byte, bool, error) {
	if iv := l.inval; iv != nil && !iv.up.Load() {
		return l.shared.Get(ctx, key)
	}
	return l.Get(ctx, key)
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

// Delete removes key from both layers and, with WithInvalidation, from the
// local layer of every instance subscribed to the channel (this one
// included, which undoes a concurrent fill from a read made before the
// delete). The local layer is cleared even when the shared one fails; the
// other instances then miss the deletion, and the returned error (wrapping
// ErrUnavailable) says so.
func (l *Layered) Delete(ctx context.Context, key string) error {
	_ = l.local.Delete(ctx, key)
	if l.inval != nil {
		return l.inval.publishDelete(ctx, key)
	}
	return l.shared.Delete(ctx, key)
}

// Ping reports whether the shared cache is reachable.
func (l *Layered) Ping(ctx context.Context) error { return l.shared.Ping(ctx) }

// Close stops the invalidation subscriber, drops the local entries and closes
// the shared cache.
func (l *Layered) Close() error {
	if l.inval != nil {
		l.inval.stop()
	}
	_ = l.local.Close()
	return l.shared.Close()
}
