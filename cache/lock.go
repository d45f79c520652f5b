package cache

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrNotHeld is returned by a lock's release function when the lock was no
// longer held by its caller: it expired (and may have been taken by another
// holder, whose lock is left alone) or was already released.
var ErrNotHeld = errors.New("cache: lock not held")

// releaseScript deletes KEYS[1] only while it still holds this holder's token
// ARGV[1], so that a holder whose lock expired can never release the lock of
// the instance that took it next. It returns the number of keys deleted.
var releaseScript = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
	return redis.call("DEL", KEYS[1])
end
return 0
`)

// TryLock takes the cluster-wide lock named key for ttl without waiting, with
// SET key <random token> NX PX ttl. It returns ok = false when another holder
// has the lock. On success, release gives the lock back; it returns
// ErrNotHeld when the lock expired before, and never releases a lock that
// another holder took since. A holder that dies keeps the lock at most ttl.
//
// ttl must be at least one millisecond (Redis counts whole milliseconds; it is
// truncated to one). Backend errors wrap ErrUnavailable; with an error, ok is
// false and release is nil. Waiting for the holder's result is the caller's
// business (for example polling the cache key the holder will fill).
func (r *Redis) TryLock(ctx context.Context, key string, ttl time.Duration) (release func(context.Context) error, ok bool, err error) {
	ttl = ttl.Truncate(time.Millisecond)
	if ttl <= 0 {
		return nil, false, fmt.Errorf("cache: lock %q: ttl must be at least 1ms", key)
	}
	// 128 random bits: no other holder ever has the same token.
	token := rand.Text()
	// SET key token NX PX ttl (EX when ttl is whole seconds).
	ok, err = r.client.SetNX(ctx, key, token, ttl).Result()
	switch {
	case errors.Is(err, redis.Nil): // NX not met (go-redis may report it this way)
		return nil, false, nil
	case err != nil:
		return nil, false, unavailable("lock", err)
	case !ok:
		return nil, false, nil
	}
	release = func(ctx context.Context) error {
		n, err := releaseScript.Run(ctx, r.client, []string{key}, token).Int64()
		if err != nil {
			return unavailable("unlock", err)
		}
		if n == 0 {
			return ErrNotHeld
		}
		return nil
	}
	return release, true, nil
}
