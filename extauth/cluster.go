package extauth

import (
	"context"
	"time"
)

// Locker takes a short cluster-wide lock (cache.Redis implements it). With
// one, the instances sharing a cache validate a new token once between them:
// the lock holder calls userinfo, the others wait for its cache entry.
type Locker interface {
	TryLock(ctx context.Context, key string, ttl time.Duration) (release func(context.Context) error, ok bool, err error)
}

// LockKeyPrefix starts the keys of validation locks.
const LockKeyPrefix = "fhirgate:extlock:v1:"

// lockPoll is how often an instance waiting for another's validation looks
// for its result.
const lockPoll = 10 * time.Millisecond

// lockSlack is added to the userinfo timeout for the lock's lifetime: an
// instance that dies holding the lock delays the others by at most that long.
const lockSlack = 2 * time.Second

// awaitCluster takes tok's validation lock, or waits until the instance that
// holds it has cached a result. It returns done=true with that result when
// another instance validated the token; otherwise the caller validates, and
// must call release (never nil) when done. Without a Locker, or when the lock
// store is unreachable, the caller validates on its own: availability wins
// over saving an IdP call.
func (a *Authenticator) awaitCluster(ctx context.Context, p *provider, tok *Token) (res *Result, done bool, release func(), err error) {
	noop := func() {}
	if a.locker == nil {
		return nil, false, noop, nil
	}
	key := LockKeyPrefix + tok.CacheKey[len(CacheKeyPrefix):]
	ttl := p.cfg.UserInfoTimeout.Duration + lockSlack
	for {
		unlock, ok, lerr := a.locker.TryLock(ctx, key, ttl)
		if lerr != nil {
			a.log.WarnContext(ctx, "extauth: validation lock unavailable; validating without it", "token", tok, "error", lerr)
			return nil, false, noop, nil
		}
		if ok {
			a.metrics.clusterLocks.WithLabelValues("acquired").Inc()
			release = func() {
				rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
				defer cancel()
				_ = unlock(rctx) // an expired lock is harmless
			}
			// The previous holder may have finished between our miss and the lock.
			if res, hit, err := a.lookup(ctx, tok); hit {
				release()
				return res, true, noop, err
			}
			return nil, false, release, nil
		}
		a.metrics.clusterLocks.WithLabelValues("waited").Inc()
		select {
		case <-ctx.Done():
			return nil, true, noop, &Error{Kind: KindUnavailable, Reason: ReasonCanceled, RetryAfter: time.Second, Err: ctx.Err()}
		case <-time.After(lockPoll):
		}
		if res, hit, err := a.lookup(ctx, tok); hit {
			return res, true, noop, err
		}
	}
}
