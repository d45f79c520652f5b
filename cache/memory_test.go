package cache_test

import (
	"context"
	"math"
	"strconv"
	"testing"
	"time"

	"github.com/fhirgate/fhirgate/cache"
)

func TestMemoryBounded(t *testing.T) {
	tests := []struct {
		name       string
		maxEntries int
		inserts    int
		want       int // exact Len after the inserts
	}{
		{"one shard", 10, 1000, 10},
		{"several shards", 5000, 20000, 5000},
		// Shards fill unevenly, so insert well over the bound to fill them all.
		{"non-positive means default (100 000 keys)", 0, 3 * cache.DefaultMaxEntries, cache.DefaultMaxEntries},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := cache.NewMemory(tc.maxEntries, newClock().Now)
			ctx := context.Background()
			for i := range tc.inserts {
				_ = m.Set(ctx, "k"+strconv.Itoa(i), []byte("v"), time.Hour)
			}
			if got := m.Len(); got != tc.want {
				t.Fatalf("Len = %d after %d inserts, want %d", got, tc.inserts, tc.want)
			}
			// The newest entry always survives its own insertion.
			assertGet(t, m, "k"+strconv.Itoa(tc.inserts-1), []byte("v"))
		})
	}
}

func TestMemoryEvictsLeastRecentlyUsed(t *testing.T) {
	ctx := context.Background()
	m := cache.NewMemory(100, newClock().Now)
	for i := range 100 {
		mustSet(t, m, "old"+strconv.Itoa(i), []byte("v"), time.Hour)
	}
	for i := range 50 { // touch the first half
		assertGet(t, m, "old"+strconv.Itoa(i), []byte("v"))
	}
	for i := range 50 {
		mustSet(t, m, "new"+strconv.Itoa(i), []byte("v"), time.Hour)
	}
	for i := range 100 {
		_, ok, _ := m.Get(ctx, "old"+strconv.Itoa(i))
		if wantHit := i < 50; ok != wantHit {
			t.Errorf("old%d: hit = %v, want %v (recently used entries must survive)", i, ok, wantHit)
		}
	}
	if got := m.Len(); got != 100 {
		t.Errorf("Len = %d, want 100", got)
	}
}

func TestMemorySemantics(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		run  func(t *testing.T, m *cache.Memory, clk *clock)
	}{
		{"set copies the value", func(t *testing.T, m *cache.Memory, _ *clock) {
			v := []byte("abc")
			mustSet(t, m, "k", v, time.Minute)
			v[0] = 'X'
			assertGet(t, m, "k", []byte("abc"))
		}},
		{"deleted slot is reused before evicting", func(t *testing.T, m *cache.Memory, _ *clock) {
			mustSet(t, m, "a", []byte("1"), time.Minute)
			mustSet(t, m, "b", []byte("2"), time.Minute)
			_ = m.Delete(ctx, "a")
			mustSet(t, m, "c", []byte("3"), time.Minute)
			assertGet(t, m, "b", []byte("2"))
			assertGet(t, m, "c", []byte("3"))
		}},
		{"overwrite renews the ttl", func(t *testing.T, m *cache.Memory, clk *clock) {
			mustSet(t, m, "k", []byte("1"), time.Minute)
			clk.Advance(50 * time.Second)
			mustSet(t, m, "k", []byte("2"), time.Minute)
			clk.Advance(50 * time.Second)
			assertGet(t, m, "k", []byte("2"))
		}},
		{"ttl <= 0 keeps an existing entry", func(t *testing.T, m *cache.Memory, _ *clock) {
			mustSet(t, m, "k", []byte("1"), time.Minute)
			mustSet(t, m, "k", []byte("2"), 0)
			assertGet(t, m, "k", []byte("1"))
		}},
		{"huge ttl does not overflow", func(t *testing.T, m *cache.Memory, clk *clock) {
			mustSet(t, m, "k", []byte("v"), time.Duration(math.MaxInt64))
			clk.Advance(100 * 365 * 24 * time.Hour)
			assertGet(t, m, "k", []byte("v"))
		}},
		{"expired entries are replaced first", func(t *testing.T, m *cache.Memory, clk *clock) {
			mustSet(t, m, "short", []byte("s"), time.Second)
			mustSet(t, m, "long", []byte("l"), time.Hour)
			clk.Advance(2 * time.Second)
			assertMiss(t, m, "short")
			mustSet(t, m, "next", []byte("n"), time.Hour)
			assertGet(t, m, "long", []byte("l"))
			assertGet(t, m, "next", []byte("n"))
		}},
		{"remaining ttl", func(t *testing.T, m *cache.Memory, clk *clock) {
			mustSet(t, m, "k", []byte("v"), time.Minute)
			clk.Advance(15 * time.Second)
			_, ttl, ok, err := m.GetWithTTL(ctx, "k")
			if !ok || err != nil || ttl != 45*time.Second {
				t.Fatalf("GetWithTTL = %v, %v, %v; want 45s, true, nil", ttl, ok, err)
			}
		}},
		{"close drops everything", func(t *testing.T, m *cache.Memory, _ *clock) {
			mustSet(t, m, "k", []byte("v"), time.Minute)
			if err := m.Close(); err != nil {
				t.Fatal(err)
			}
			assertMiss(t, m, "k")
			if m.Len() != 0 {
				t.Fatalf("Len after Close = %d", m.Len())
			}
			mustSet(t, m, "k", []byte("again"), time.Minute)
			assertGet(t, m, "k", []byte("again"))
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := newClock()
			tc.run(t, cache.NewMemory(2, clk.Now), clk)
		})
	}
}

func TestMemoryGetHitDoesNotAllocate(t *testing.T) {
	m := cache.NewMemory(1000, nil)
	ctx := context.Background()
	mustSet(t, m, "fhirgate:ext:v1:https://idp.example:abc", []byte("caller"), time.Hour)
	allocs := testing.AllocsPerRun(1000, func() {
		if _, ok, _ := m.Get(ctx, "fhirgate:ext:v1:https://idp.example:abc"); !ok {
			t.Fatal("miss")
		}
	})
	if allocs != 0 {
		t.Fatalf("Get hit allocates %.1f times, want 0", allocs)
	}
}
