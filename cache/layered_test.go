package cache_test

import (
	"context"
	"testing"
	"time"

	"github.com/fhirgate/fhirgate/cache"
	"github.com/fhirgate/fhirgate/internal/testredis"
)

// plainCache hides the TTLGetter of a Memory, to exercise the path for shared
// caches that cannot report remaining TTLs.
type plainCache struct{ cache.Cache }

func TestLayeredFillsLocalFromShared(t *testing.T) {
	ctx := context.Background()
	r := newRedis(t, testredis.Start(t))
	tests := []struct {
		name      string
		sharedTTL time.Duration
		opts      []cache.LayeredOption
		wantMin   time.Duration // local TTL bounds after a shared hit
		wantMax   time.Duration
	}{
		{"remaining shared ttl", 10 * time.Second, nil, 9 * time.Second, 10 * time.Second},
		{"capped by WithLocalTTL", time.Hour, []cache.LayeredOption{cache.WithLocalTTL(time.Minute)}, time.Minute, time.Minute},
		{"cap above shared ttl", 10 * time.Second, []cache.LayeredOption{cache.WithLocalTTL(time.Hour)}, 9 * time.Second, 10 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k := prefix(t) + "k"
			l := cache.NewLayered(cache.NewMemory(100, newClock().Now), r, tc.opts...)
			mustSet(t, r, k, []byte("shared"), tc.sharedTTL)
			assertGet(t, l, k, []byte("shared"))
			v, ttl, ok, _ := l.Local().GetWithTTL(ctx, k)
			if !ok || string(v) != "shared" || ttl < tc.wantMin || ttl > tc.wantMax {
				t.Fatalf("local = %q, %v, %v; want shared, [%v, %v]", v, ttl, ok, tc.wantMin, tc.wantMax)
			}
			// Served from the local layer now, even once the shared entry is gone.
			if err := r.Delete(ctx, k); err != nil {
				t.Fatal(err)
			}
			assertGet(t, l, k, []byte("shared"))
		})
	}
}

func TestLayeredLocalNeverOutlivesSet(t *testing.T) {
	ctx := context.Background()
	r := newRedis(t, testredis.Start(t))
	clk := newClock()
	l := cache.NewLayered(cache.NewMemory(100, clk.Now), r, cache.WithLocalTTL(time.Minute))
	p := prefix(t)
	for _, ttl := range []time.Duration{time.Second, time.Minute, time.Hour} {
		k := p + ttl.String()
		mustSet(t, l, k, []byte("v"), ttl)
		_, local, ok, _ := l.Local().GetWithTTL(ctx, k)
		if want := min(ttl, time.Minute); !ok || local != want {
			t.Errorf("Set ttl %v: local ttl = %v (hit %v), want %v", ttl, local, ok, want)
		}
		assertRedisTTL(t, r, k, ttl)
	}
}

func TestLayeredWithoutTTLGetter(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name      string
		opts      []cache.LayeredOption
		wantLocal bool
	}{
		{"no cap: local is not filled", nil, false},
		{"cap: local filled for the cap", []cache.LayeredOption{cache.WithLocalTTL(time.Second)}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			shared := cache.NewMemory(10, nil)
			l := cache.NewLayered(cache.NewMemory(10, nil), plainCache{shared}, tc.opts...)
			mustSet(t, shared, "k", []byte("v"), time.Hour)
			assertGet(t, l, "k", []byte("v"))
			_, ttl, ok, _ := l.Local().GetWithTTL(ctx, "k")
			if ok != tc.wantLocal || (ok && ttl > time.Second) {
				t.Fatalf("local hit = %v ttl %v, want hit %v with ttl <= 1s", ok, ttl, tc.wantLocal)
			}
		})
	}
}

func TestLayeredRedisKeyWithoutExpiry(t *testing.T) {
	ctx := context.Background()
	r := newRedis(t, testredis.Start(t))
	l := cache.NewLayered(cache.NewMemory(10, nil), r)
	k := prefix(t) + "persistent"
	if err := r.Client().Set(ctx, k, "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	assertGet(t, l, k, []byte("v"))
	// Unknown remaining life: the local layer must not keep it.
	if _, ok, _ := l.Local().Get(ctx, k); ok {
		t.Fatal("a shared entry without expiry was copied to the local layer")
	}
}
