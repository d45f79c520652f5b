package cache

import (
	"context"
	"hash/maphash"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultMaxEntries bounds a Memory built with a non-positive maxEntries.
const DefaultMaxEntries = 100_000

// Local is a bounded in-process map from string keys to values of type V with
// a time to live per entry. It is split into shards, each guarded by its own
// read/write lock; a hit takes only the read lock and allocates nothing. When
// a shard is full, an expired entry or the least recently used one
// (approximated with the CLOCK algorithm) is evicted. Local is safe for
// concurrent use. Values are stored as given: callers must not modify a value
// after storing it or after getting it.
type Local[V any] struct {
	now    func() time.Time
	seed   maphash.Seed
	mask   uint64
	shards []localShard[V]
}

// localShard is one lock's worth of entries. Entries live in a slot array that
// the clock hand sweeps on eviction; index maps a key to its slot.
type localShard[V any] struct {
	mu    sync.RWMutex
	index map[string]int32
	slots []localSlot[V]
	free  []int32 // slots emptied by Delete, reused before any eviction
	hand  int     // next slot the clock hand looks at
	limit int     // most entries this shard holds
	_     [64]byte
}

// localSlot is one entry. A slot with an empty key and zero expiry is free.
type localSlot[V any] struct {
	key     string
	value   V
	expires int64  // Unix nanoseconds after which the entry is gone
	ref     uint32 // set (atomically) on a hit, cleared by the clock hand
}

// NewLocal returns an empty Local holding at most maxEntries entries
// (DefaultMaxEntries when maxEntries <= 0). now is the clock used for expiry;
// nil means time.Now.
func NewLocal[V any](maxEntries int, now func() time.Time) *Local[V] {
	if maxEntries <= 0 {
		maxEntries = DefaultMaxEntries
	}
	if now == nil {
		now = time.Now
	}
	// Enough shards to keep lock contention low, few enough that each shard
	// still has a few hundred slots so the eviction order stays close to LRU.
	n := 1
	for n < 64 && maxEntries/(n*2) >= 256 {
		n *= 2
	}
	m := &Local[V]{now: now, seed: maphash.MakeSeed(), mask: uint64(n - 1), shards: make([]localShard[V], n)}
	for i := range m.shards {
		limit := maxEntries / n
		if i < maxEntries%n {
			limit++
		}
		m.shards[i].limit = limit
		m.shards[i].index = make(map[string]int32)
	}
	return m
}

func (m *Local[V]) shard(key string) *localShard[V] {
	return &m.shards[maphash.String(m.seed, key)&m.mask]
}

// Get returns the value stored under key, or false when it is absent or expired.
func (m *Local[V]) Get(key string) (V, bool) {
	v, _, ok := m.GetWithTTL(key)
	return v, ok
}

// GetWithTTL is Get that also returns how long the entry has left to live.
func (m *Local[V]) GetWithTTL(key string) (V, time.Duration, bool) {
	var zero V
	s := m.shard(key)
	now := m.now().UnixNano()
	s.mu.RLock()
	i, ok := s.index[key]
	if !ok {
		s.mu.RUnlock()
		return zero, 0, false
	}
	sl := &s.slots[i]
	if sl.expires <= now {
		s.mu.RUnlock()
		return zero, 0, false
	}
	if atomic.LoadUint32(&sl.ref) == 0 {
		atomic.StoreUint32(&sl.ref, 1)
	}
	v, exp := sl.value, sl.expires
	s.mu.RUnlock()
	return v, time.Duration(exp - now), true
}

// Set stores value under key for ttl. A ttl <= 0 stores nothing and leaves
// any existing entry alone.
func (m *Local[V]) Set(key string, value V, ttl time.Duration) {
	if ttl <= 0 {
		return
	}
	now := m.now().UnixNano()
	exp := now + int64(ttl)
	if exp < now { // overflow: an effectively unbounded ttl
		exp = math.MaxInt64
	}
	s := m.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if i, ok := s.index[key]; ok {
		sl := &s.slots[i]
		sl.value, sl.expires = value, exp
		atomic.StoreUint32(&sl.ref, 1)
		return
	}
	i := s.alloc(now)
	s.slots[i] = localSlot[V]{key: key, value: value, expires: exp}
	s.index[key] = i
}

// alloc returns a free slot, growing the slot array up to the shard's limit
// and evicting with the clock hand beyond it. The caller holds s.mu.
func (s *localShard[V]) alloc(now int64) int32 {
	if n := len(s.free); n > 0 {
		i := s.free[n-1]
		s.free = s.free[:n-1]
		return i
	}
	if len(s.slots) < s.limit {
		s.slots = append(s.slots, localSlot[V]{})
		return int32(len(s.slots) - 1)
	}
	// Every slot is in use. An expired or unreferenced slot is taken; a
	// referenced one gets a second chance. Two sweeps always find a victim.
	for {
		i := s.hand
		s.hand++
		if s.hand == len(s.slots) {
			s.hand = 0
		}
		sl := &s.slots[i]
		if sl.expires > now && atomic.LoadUint32(&sl.ref) != 0 {
			atomic.StoreUint32(&sl.ref, 0)
			continue
		}
		delete(s.index, sl.key)
		s.slots[i] = localSlot[V]{}
		return int32(i)
	}
}

// Delete removes key.
func (m *Local[V]) Delete(key string) {
	s := m.shard(key)
	s.mu.Lock()
	if i, ok := s.index[key]; ok {
		delete(s.index, key)
		s.slots[i] = localSlot[V]{}
		s.free = append(s.free, i)
	}
	s.mu.Unlock()
}

// Len returns the number of entries held, counting expired entries that have
// not been reclaimed yet. It never exceeds the maxEntries given to NewLocal.
func (m *Local[V]) Len() int {
	n := 0
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.RLock()
		n += len(s.index)
		s.mu.RUnlock()
	}
	return n
}

// Clear drops every entry. Shards are emptied one after another, so an entry
// set concurrently with Clear may survive it.
func (m *Local[V]) Clear() {
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		s.index = make(map[string]int32)
		s.slots, s.free, s.hand = nil, nil, 0
		s.mu.Unlock()
	}
}

// Memory is the in-process Cache: a Local of byte slices. The slice returned
// by Get is shared with the cache and must not be modified; Set copies the
// value it is given.
type Memory struct{ local *Local[[]byte] }

// NewMemory returns an empty in-process cache holding at most maxEntries
// entries (DefaultMaxEntries when maxEntries <= 0). now is the clock used for
// expiry; nil means time.Now.
func NewMemory(maxEntries int, now func() time.Time) *Memory {
	return &Memory{local: NewLocal[[]byte](maxEntries, now)}
}

// Get returns the value stored under key, or false when it is absent or
// expired. The error is always nil. The returned slice must not be modified.
func (m *Memory) Get(_ context.Context, key string) ([]byte, bool, error) {
	v, ok := m.local.Get(key)
	return v, ok, nil
}

// GetWithTTL is Get that also returns how long the entry has left to live.
func (m *Memory) GetWithTTL(_ context.Context, key string) ([]byte, time.Duration, bool, error) {
	v, ttl, ok := m.local.GetWithTTL(key)
	return v, ttl, ok, nil
}

// Set stores a copy of value under key for ttl. A ttl <= 0 stores nothing
// and leaves any existing entry alone. The error is always nil.
func (m *Memory) Set(_ context.Context, key string, value []byte, ttl time.Duration) error {
	if ttl > 0 {
		m.local.Set(key, append(make([]byte, 0, len(value)), value...), ttl)
	}
	return nil
}

// Delete removes key. The error is always nil.
func (m *Memory) Delete(_ context.Context, key string) error {
	m.local.Delete(key)
	return nil
}

// Len returns the number of entries held (see Local.Len).
func (m *Memory) Len() int { return m.local.Len() }

// Ping always succeeds: the process is its own backend.
func (m *Memory) Ping(context.Context) error { return nil }

// Clear drops every entry. The Memory stays usable.
func (m *Memory) Clear() { m.local.Clear() }

// Close drops every entry, like Clear. The Memory stays usable.
func (m *Memory) Close() error {
	m.Clear()
	return nil
}
