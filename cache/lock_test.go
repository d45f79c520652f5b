package cache_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/fhirgate/fhirgate/cache"
	"github.com/fhirgate/fhirgate/internal/testredis"
)

func mustLock(t *testing.T, r *cache.Redis, key string, ttl time.Duration) func(context.Context) error {
	t.Helper()
	release, ok, err := r.TryLock(context.Background(), key, ttl)
	if err != nil || !ok || release == nil {
		t.Fatalf("TryLock(%q) = release %v, %v, %v; want the lock", key, release != nil, ok, err)
	}
	return release
}

func assertLocked(t *testing.T, r *cache.Redis, key string) {
	t.Helper()
	release, ok, err := r.TryLock(context.Background(), key, time.Minute)
	if err != nil || ok || release != nil {
		t.Fatalf("TryLock(%q) on a held lock = release %v, %v, %v; want not ok", key, release != nil, ok, err)
	}
}

func TestTryLockOneWinner(t *testing.T) {
	srv := testredis.Start(t)
	const contenders = 8
	clients := make([]*cache.Redis, contenders) // one client each, as separate instances
	for i := range clients {
		clients[i] = newRedis(t, srv)
	}
	key := prefix(t) + "lock"
	const ttl = 10 * time.Second

	var (
		wg       sync.WaitGroup
		start    = make(chan struct{})
		mu       sync.Mutex
		winners  int
		releases []func(context.Context) error
	)
	for _, r := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			release, ok, err := r.TryLock(context.Background(), key, ttl)
			if err != nil {
				t.Errorf("TryLock: %v", err)
				return
			}
			if ok != (release != nil) {
				t.Errorf("TryLock: ok = %v but release set = %v", ok, release != nil)
			}
			if ok {
				mu.Lock()
				winners++
				releases = append(releases, release)
				mu.Unlock()
			}
		}()
	}
	close(start)
	wg.Wait()
	if winners != 1 {
		t.Fatalf("%d contenders got the lock, want exactly 1", winners)
	}
	// The lock expires on its own: a dead holder blocks nobody past ttl.
	assertRedisTTL(t, clients[0], key, ttl)

	if err := releases[0](context.Background()); err != nil {
		t.Fatalf("release: %v", err)
	}
	if d, _ := clients[0].TTL(context.Background(), key); d >= 0 {
		t.Fatalf("lock key still exists after release (TTL %v)", d)
	}
	if err := releases[0](context.Background()); !errors.Is(err, cache.ErrNotHeld) {
		t.Fatalf("second release: err = %v, want ErrNotHeld", err)
	}
	mustLock(t, clients[1], key, ttl)
}

// TestTryLockStaleHolder lets a lock expire and be taken by another holder:
// the first holder's release must leave the new holder's lock alone.
func TestTryLockStaleHolder(t *testing.T) {
	ctx := context.Background()
	r := newRedis(t, testredis.Start(t))
	key := prefix(t) + "lock"

	stale := mustLock(t, r, key, time.Minute)
	// Expire it now rather than waiting out a ttl.
	if err := r.Client().PExpire(ctx, key, time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	var current func(context.Context) error
	if err := eventually(5*time.Second, func() error {
		release, ok, err := r.TryLock(ctx, key, time.Minute)
		if err != nil {
			return err
		}
		if !ok {
			return errors.New("lock not free after its expiry")
		}
		current = release
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	if err := stale(ctx); !errors.Is(err, cache.ErrNotHeld) {
		t.Fatalf("stale release: err = %v, want ErrNotHeld", err)
	}
	assertLocked(t, r, key)
	assertRedisTTL(t, r, key, time.Minute)

	if err := current(ctx); err != nil {
		t.Fatalf("current holder's release: %v", err)
	}
	mustLock(t, r, key, time.Minute)
}

// TestTryLockExpiresWithoutRelease models a holder that dies: the lock must
// become free once its ttl has passed in Redis.
func TestTryLockExpiresWithoutRelease(t *testing.T) {
	r := newRedis(t, testredis.Start(t))
	key := prefix(t) + "lock"
	mustLock(t, r, key, 50*time.Millisecond)
	assertLocked(t, r, key)
	// Redis expires keys on its own wall clock: poll for the lock.
	if err := eventually(5*time.Second, func() error {
		_, ok, err := r.TryLock(context.Background(), key, time.Minute)
		if err != nil {
			return err
		}
		if !ok {
			return errors.New("lock still held past its ttl")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func TestTryLockErrors(t *testing.T) {
	ctx := context.Background()
	srv := testredis.Start(t)
	r := newRedis(t, srv)
	key := prefix(t) + "lock"

	for _, ttl := range []time.Duration{0, -time.Second, 999 * time.Microsecond} {
		release, ok, err := r.TryLock(ctx, key, ttl)
		if err == nil || ok || release != nil || errors.Is(err, cache.ErrUnavailable) {
			t.Errorf("TryLock ttl %v = release %v, %v, %v; want a plain error", ttl, release != nil, ok, err)
		}
	}

	held := mustLock(t, r, key, time.Minute)
	srv.Stop()
	start := time.Now()
	release, ok, err := r.TryLock(ctx, key+"2", time.Minute)
	if !errors.Is(err, cache.ErrUnavailable) || ok || release != nil {
		t.Errorf("TryLock with Redis down = release %v, %v, %v; want ErrUnavailable", release != nil, ok, err)
	}
	if err := held(ctx); !errors.Is(err, cache.ErrUnavailable) {
		t.Errorf("release with Redis down: err = %v, want ErrUnavailable", err)
	}
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("lock calls took %v with Redis down, want < 2s", elapsed)
	}

	// After a restart the script cache is empty: release must still work
	// (EVALSHA falls back to EVAL).
	srv.Restart()
	if err := eventually(5*time.Second, func() error { return r.Ping(ctx) }); err != nil {
		t.Fatal(err)
	}
	again := mustLock(t, r, key, time.Minute)
	if err := again(ctx); err != nil {
		t.Fatalf("release after restart: %v", err)
	}
}
