// Package cache stores short-lived values (validated external tokens, negative
// results) with a time to live. It offers one small interface with an
// in-process implementation (the embedded default) and a Redis implementation
// shared by every instance.
package cache

import (
	"context"
	"errors"
	"time"
)

// ErrUnavailable wraps errors from a cache backend that cannot be reached.
// Callers treat it as a miss and carry on without the cache.
var ErrUnavailable = errors.New("cache: unavailable")

// Cache is a key/value store with per-entry expiry.
type Cache interface {
	// Get returns the value and true, or nil and false on a miss or expiry.
	// Callers must not modify the returned slice: the in-process
	// implementation shares it with the cache to avoid a copy on every hit.
	Get(ctx context.Context, key string) ([]byte, bool, error)
	// Set stores value for ttl; a ttl <= 0 stores nothing.
	Set(ctx context.Context, key string, value []byte, ttl time.Duration) error
	// Delete removes key; deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// Ping reports whether the backend is reachable.
	Ping(ctx context.Context) error
	// Close releases the backend's resources.
	Close() error
}
