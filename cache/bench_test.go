package cache_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/fhirgate/fhirgate/cache"
	"github.com/fhirgate/fhirgate/internal/testredis"
)

// benchKey has the shape and length of a real cache key (SPEC §5 step 4).
const benchKey = "fhirgate:ext:v1:https://idp.example.com/realms/main:" +
	"q1mJtXoF0gP4Ck3wJ0cGm7m2yYwU5h2iC1u8p6a9b0E"

var benchValue = []byte(`{"project":"p1","membership":"m1","profile":"Practitioner/123","login":"l1","exp":1893456000}`)

// fillMemory gives the cache a realistic population around the hot key.
func fillMemory(b *testing.B, n int) *cache.Memory {
	m := cache.NewMemory(100_000, nil)
	ctx := context.Background()
	for i := range n {
		_ = m.Set(ctx, benchKey+strconv.Itoa(i), benchValue, time.Hour)
	}
	mustSet(b, m, benchKey, benchValue, time.Hour)
	return m
}

func benchGet(b *testing.B, c cache.Cache) {
	ctx := context.Background()
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok, err := c.Get(ctx, benchKey); !ok || err != nil {
				b.Fatalf("miss: %v", err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, ok, err := c.Get(ctx, benchKey); !ok || err != nil {
					b.Errorf("miss: %v", err)
					return
				}
			}
		})
	})
}

func BenchmarkMemoryGetHit(b *testing.B) {
	benchGet(b, fillMemory(b, 50_000))
}

func BenchmarkRedisGetHit(b *testing.B) {
	r := newRedis(b, testredis.Start(b))
	mustSet(b, r, benchKey, benchValue, time.Hour)
	benchGet(b, r)
}

func BenchmarkLayeredGetHit(b *testing.B) {
	r := newRedis(b, testredis.Start(b))
	l := cache.NewLayered(fillMemory(b, 50_000), r)
	mustSet(b, l, benchKey, benchValue, time.Hour)
	benchGet(b, l)
}

func BenchmarkMemorySet(b *testing.B) {
	m := cache.NewMemory(100_000, nil)
	ctx := context.Background()
	keys := make([]string, 200_000)
	for i := range keys {
		keys[i] = benchKey + strconv.Itoa(i)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		_ = m.Set(ctx, keys[i%len(keys)], benchValue, time.Hour)
		i++
	}
}
