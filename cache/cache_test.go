package cache_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fhirgate/fhirgate/cache"
	"github.com/fhirgate/fhirgate/internal/testredis"
)

// clock is a settable time source for expiry tests, safe for concurrent use.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano())
	return c
}

func (c *clock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// subject is one implementation under the shared test table.
type subject struct {
	c     cache.Cache
	clock *clock // nil when expiry follows real time only
	// checkExpiry asserts that key, just set with ttl, expires as it should.
	checkExpiry func(t *testing.T, key string, ttl time.Duration)
}

// prefix returns a key prefix unique to this test, so that tests sharing one
// Redis (FHIRGATE_TEST_REDIS_URL) never see each other's keys.
func prefix(t testing.TB) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "fhirgate:test:" + t.Name() + ":" + hex.EncodeToString(b) + ":"
}

func newRedis(t testing.TB, srv *testredis.Server) *cache.Redis {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := cache.NewRedis(ctx, srv.URL())
	if err != nil {
		t.Fatalf("NewRedis: %v", err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func assertRedisTTL(t *testing.T, r *cache.Redis, key string, ttl time.Duration) {
	t.Helper()
	got, err := r.TTL(context.Background(), key)
	if err != nil {
		t.Fatalf("TTL(%q): %v", key, err)
	}
	// Redis counts down in real time; one second is far more than a test needs.
	if got <= 0 || got > ttl || got < ttl-time.Second {
		t.Fatalf("TTL(%q) = %v, want in (%v, %v]", key, got, ttl-time.Second, ttl)
	}
}

func assertClockExpiry(t *testing.T, c cache.Cache, clk *clock, key string, ttl time.Duration) {
	t.Helper()
	ctx := context.Background()
	clk.Advance(ttl - time.Nanosecond)
	if _, ok, _ := c.Get(ctx, key); !ok {
		t.Fatalf("Get(%q) 1ns before expiry: miss, want hit", key)
	}
	clk.Advance(time.Nanosecond)
	if v, ok, _ := c.Get(ctx, key); ok {
		t.Fatalf("Get(%q) at expiry = %q, want miss", key, v)
	}
}

// subjects builds each implementation afresh for t.
func subjects(t *testing.T) map[string]func(t *testing.T) subject {
	return map[string]func(t *testing.T) subject{
		"memory": func(t *testing.T) subject {
			clk := newClock()
			m := cache.NewMemory(1000, clk.Now)
			return subject{c: m, clock: clk, checkExpiry: func(t *testing.T, key string, ttl time.Duration) {
				assertClockExpiry(t, m, clk, key, ttl)
			}}
		},
		"redis": func(t *testing.T) subject {
			r := newRedis(t, testredis.Start(t))
			return subject{c: r, checkExpiry: func(t *testing.T, key string, ttl time.Duration) {
				assertRedisTTL(t, r, key, ttl)
			}}
		},
		"layered": func(t *testing.T) subject {
			clk := newClock()
			r := newRedis(t, testredis.Start(t))
			l := cache.NewLayered(cache.NewMemory(1000, clk.Now), r)
			return subject{c: l, clock: clk, checkExpiry: func(t *testing.T, key string, ttl time.Duration) {
				assertRedisTTL(t, r, key, ttl)
				_, localTTL, ok, _ := l.Local().GetWithTTL(context.Background(), key)
				if !ok || localTTL <= 0 || localTTL > ttl {
					t.Fatalf("local TTL(%q) = %v (hit %v), want in (0, %v]", key, localTTL, ok, ttl)
				}
				// The local copy expires on the local clock.
				assertClockExpiry(t, l.Local(), clk, key, ttl)
			}}
		},
		"layered with invalidation": func(t *testing.T) subject {
			clk := newClock()
			r := newRedis(t, testredis.Start(t))
			l := newInvalidating(t, cache.NewMemory(1000, clk.Now), r, prefix(t)+"inval")
			return subject{c: l, clock: clk, checkExpiry: func(t *testing.T, key string, ttl time.Duration) {
				assertRedisTTL(t, r, key, ttl)
				assertClockExpiry(t, l.Local(), clk, key, ttl)
			}}
		},
	}
}

func TestCacheContract(t *testing.T) {
	binary := make([]byte, 0, 512)
	for i := range 256 {
		binary = append(binary, byte(i))
	}
	binary = append(binary, []byte("\r\n$-1\r\n*0\r\n\x00")...)

	tests := []struct {
		name string
		run  func(t *testing.T, s subject, p string)
	}{
		{"set get delete", func(t *testing.T, s subject, p string) {
			ctx := context.Background()
			k := p + "k"
			if v, ok, err := s.c.Get(ctx, k); ok || err != nil {
				t.Fatalf("Get before Set = %q, %v, %v; want miss", v, ok, err)
			}
			mustSet(t, s.c, k, []byte("one"), time.Minute)
			assertGet(t, s.c, k, []byte("one"))
			mustSet(t, s.c, k, []byte("two"), time.Minute)
			assertGet(t, s.c, k, []byte("two"))
			if err := s.c.Delete(ctx, k); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			assertMiss(t, s.c, k)
			if err := s.c.Delete(ctx, p+"never-set"); err != nil {
				t.Fatalf("Delete of a missing key: %v", err)
			}
			if err := s.c.Ping(ctx); err != nil {
				t.Fatalf("Ping: %v", err)
			}
		}},
		{"keys are independent", func(t *testing.T, s subject, p string) {
			mustSet(t, s.c, p+"a", []byte("A"), time.Minute)
			mustSet(t, s.c, p+"b", []byte("B"), time.Minute)
			if err := s.c.Delete(context.Background(), p+"a"); err != nil {
				t.Fatal(err)
			}
			assertMiss(t, s.c, p+"a")
			assertGet(t, s.c, p+"b", []byte("B"))
		}},
		{"ttl expiry", func(t *testing.T, s subject, p string) {
			for _, ttl := range []time.Duration{1500 * time.Millisecond, time.Hour} {
				k := p + ttl.String()
				mustSet(t, s.c, k, []byte("v"), ttl)
				s.checkExpiry(t, k, ttl)
			}
		}},
		{"ttl <= 0 stores nothing", func(t *testing.T, s subject, p string) {
			for _, ttl := range []time.Duration{0, -time.Second, -1} {
				k := p + "k" + ttl.String()
				mustSet(t, s.c, k, []byte("v"), ttl)
				assertMiss(t, s.c, k)
			}
		}},
		{"binary and empty values round-trip", func(t *testing.T, s subject, p string) {
			mustSet(t, s.c, p+"bin", binary, time.Minute)
			assertGet(t, s.c, p+"bin", binary)
			mustSet(t, s.c, p+"empty", []byte{}, time.Minute)
			assertGet(t, s.c, p+"empty", []byte{})
			mustSet(t, s.c, p+"\x00key with spaces\xff", []byte("k"), time.Minute)
			assertGet(t, s.c, p+"\x00key with spaces\xff", []byte("k"))
		}},
		{"concurrent use", func(t *testing.T, s subject, p string) {
			ctx := context.Background()
			const workers, rounds, keys = 8, 200, 16
			var wg sync.WaitGroup
			errs := make(chan error, workers)
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range rounds {
						k := p + strconv.Itoa((w+i)%keys)
						switch i % 4 {
						case 0, 1:
							if err := s.c.Set(ctx, k, []byte(k+"|"+strconv.Itoa(w)), time.Minute); err != nil {
								errs <- err
								return
							}
						case 2:
							v, ok, err := s.c.Get(ctx, k)
							if err != nil {
								errs <- err
								return
							}
							// A hit must hold a value written for this very key.
							if ok && !bytes.HasPrefix(v, []byte(k+"|")) {
								errs <- fmt.Errorf("Get(%q) = %q: value of another key", k, v)
								return
							}
						case 3:
							if err := s.c.Delete(ctx, k); err != nil {
								errs <- err
								return
							}
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		}},
	}
	for name, mk := range subjects(t) {
		t.Run(name, func(t *testing.T) {
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					s := mk(t)
					tc.run(t, s, prefix(t))
				})
			}
		})
	}
}

func mustSet(t testing.TB, c cache.Cache, key string, v []byte, ttl time.Duration) {
	t.Helper()
	if err := c.Set(context.Background(), key, v, ttl); err != nil {
		t.Fatalf("Set(%q): %v", key, err)
	}
}

func assertGet(t testing.TB, c cache.Cache, key string, want []byte) {
	t.Helper()
	got, ok, err := c.Get(context.Background(), key)
	if err != nil || !ok || !bytes.Equal(got, want) {
		t.Fatalf("Get(%q) = %q, %v, %v; want %q, true, nil", key, got, ok, err, want)
	}
}

func assertMiss(t testing.TB, c cache.Cache, key string) {
	t.Helper()
	got, ok, err := c.Get(context.Background(), key)
	if err != nil || ok || got != nil {
		t.Fatalf("Get(%q) = %q, %v, %v; want miss", key, got, ok, err)
	}
}

// TestRedisDown kills the private redis-server mid-test: every Redis call
// must fail fast with ErrUnavailable, the layered cache must keep serving its
// local entries, and both must recover when Redis comes back.
func TestRedisDown(t *testing.T) {
	ctx := context.Background()
	srv := testredis.Start(t)
	r := newRedis(t, srv)
	l := cache.NewLayered(cache.NewMemory(100, nil), r)
	p := prefix(t)
	mustSet(t, l, p+"warm", []byte("local"), time.Minute)

	srv.Stop()

	calls := []struct {
		name string
		call func() error
	}{
		{"redis get", func() error { _, _, err := r.Get(ctx, p+"warm"); return err }},
		{"redis get with ttl", func() error { _, _, _, err := r.GetWithTTL(ctx, p+"warm"); return err }},
		{"redis set", func() error { return r.Set(ctx, p+"x", []byte("v"), time.Minute) }},
		{"redis delete", func() error { return r.Delete(ctx, p+"x") }},
		{"redis ttl", func() error { _, err := r.TTL(ctx, p+"x"); return err }},
		{"redis ping", func() error { return r.Ping(ctx) }},
		{"layered get of a local miss", func() error { _, _, err := l.Get(ctx, p+"cold"); return err }},
		{"layered set", func() error { return l.Set(ctx, p+"new", []byte("n"), time.Minute) }},
		{"layered ping", func() error { return l.Ping(ctx) }},
	}
	for _, tc := range calls {
		start := time.Now()
		err := tc.call()
		if elapsed := time.Since(start); elapsed > 2*time.Second {
			t.Errorf("%s took %v with Redis down, want < 2s", tc.name, elapsed)
		}
		if !errors.Is(err, cache.ErrUnavailable) {
			t.Errorf("%s: err = %v, want ErrUnavailable", tc.name, err)
		}
	}

	// The local layer still serves what it holds, including the entry whose
	// shared write just failed.
	assertGet(t, l, p+"warm", []byte("local"))
	assertGet(t, l, p+"new", []byte("n"))
	if err := l.Delete(ctx, p+"new"); !errors.Is(err, cache.ErrUnavailable) {
		t.Errorf("layered delete: err = %v, want ErrUnavailable", err)
	}
	if _, ok, _ := l.Local().Get(ctx, p+"new"); ok {
		t.Error("layered delete left the local entry although Redis was down")
	}

	srv.Restart()
	// After repeated dial failures go-redis opens a circuit breaker that a
	// background probe closes about once a second; it offers no event to wait
	// on, so poll Ping (each failing Ping returns at once) with a deadline.
	if err := eventually(5*time.Second, func() error { return r.Ping(ctx) }); err != nil {
		t.Fatalf("Ping after restart: %v", err)
	}
	mustSet(t, r, p+"back", []byte("b"), time.Minute)
	assertGet(t, r, p+"back", []byte("b"))
}

// eventually calls f every 20ms until it returns nil or d has passed, and
// returns f's last error.
func eventually(d time.Duration, f func() error) error {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-deadline.C:
			return err
		case <-tick.C:
		}
	}
}

func TestNewRedisErrors(t *testing.T) {
	srv := testredis.Start(t)
	url := srv.URL()
	srv.Stop()
	tests := []struct {
		name        string
		url         string
		unavailable bool
	}{
		{"malformed url", "redis://user:s3cret@[::1", false},
		{"wrong scheme", "http://user:s3cret@127.0.0.1:6379/0", false},
		{"dead server", url, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			start := time.Now()
			r, err := cache.NewRedis(ctx, tc.url)
			if err == nil {
				_ = r.Close()
				t.Fatal("NewRedis succeeded, want error")
			}
			if got := errors.Is(err, cache.ErrUnavailable); got != tc.unavailable {
				t.Errorf("errors.Is(%v, ErrUnavailable) = %v, want %v", err, got, tc.unavailable)
			}
			if bytes.Contains([]byte(err.Error()), []byte("s3cret")) {
				t.Errorf("error %q reveals the password", err)
			}
			if elapsed := time.Since(start); elapsed > 2*time.Second {
				t.Errorf("NewRedis took %v, want < 2s", elapsed)
			}
		})
	}
}

func TestRedisTTLDetails(t *testing.T) {
	ctx := context.Background()
	r := newRedis(t, testredis.Start(t))
	p := prefix(t)

	// Sub-millisecond TTLs cannot be expressed with PX: nothing is stored.
	mustSet(t, r, p+"tiny", []byte("v"), 999*time.Microsecond)
	assertMiss(t, r, p+"tiny")

	mustSet(t, r, p+"k", []byte("v"), 10*time.Second)
	v, ttl, ok, err := r.GetWithTTL(ctx, p+"k")
	if err != nil || !ok || string(v) != "v" || ttl <= 9*time.Second || ttl > 10*time.Second {
		t.Fatalf("GetWithTTL = %q, %v, %v, %v; want v, (9s,10s], true, nil", v, ttl, ok, err)
	}
	if v, ttl, ok, err := r.GetWithTTL(ctx, p+"missing"); ok || err != nil || v != nil || ttl != 0 {
		t.Fatalf("GetWithTTL(missing) = %q, %v, %v, %v; want miss", v, ttl, ok, err)
	}
	if d, err := r.TTL(ctx, p+"missing"); err != nil || d >= 0 {
		t.Fatalf("TTL(missing) = %v, %v; want negative", d, err)
	}
}
