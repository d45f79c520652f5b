package cache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultInvalidationChannel is the Redis pub/sub channel on which Layered
// caches announce the keys they delete (see WithInvalidation).
const DefaultInvalidationChannel = "fhirgate:invalidate:v1"

const (
	// invalidationPingInterval is how long the subscriber waits for a message
	// before it sends PING; a PING unanswered for as long again marks the
	// subscription down. A silently dead connection is thus noticed within
	// two intervals.
	invalidationPingInterval = 500 * time.Millisecond
	// invalidationMinBackoff and invalidationMaxBackoff bound the wait
	// between attempts to (re)establish the subscription.
	invalidationMinBackoff = 50 * time.Millisecond
	invalidationMaxBackoff = time.Second
)

// invalidator keeps one Layered cache's local layer in step with the
// deletions of every instance sharing its Redis. It publishes deleted keys on
// a channel and runs one goroutine that subscribes to the channel and drops
// each received key from the local layer.
type invalidator struct {
	redis   *Redis
	channel string
	local   *Memory
	log     *slog.Logger

	// epoch changes whenever a key is invalidated or the subscription goes
	// up or down. Layered.Get reads it around a local fill and undoes the
	// fill when it changed, so an invalidation racing with the fill wins.
	epoch atomic.Uint64
	// up is true while the subscription is established and every deletion
	// published since the local layer was last cleared has been applied.
	up atomic.Bool

	cancel context.CancelFunc
	done   chan struct{} // closed when run returns

	mu     sync.Mutex
	ps     *redis.PubSub // the current subscription, closed by stop
	closed bool
}

// newInvalidator starts the subscriber goroutine; stop ends it.
func newInvalidator(r *Redis, channel string, local *Memory, log *slog.Logger) *invalidator {
	ctx, cancel := context.WithCancel(context.Background())
	iv := &invalidator{redis: r, channel: channel, local: local, log: log, cancel: cancel, done: make(chan struct{})}
	go iv.run(ctx)
	return iv
}

// publishDelete deletes key from Redis and announces it on the channel, in
// one round trip.
func (iv *invalidator) publishDelete(ctx context.Context, key string) error {
	pipe := iv.redis.client.Pipeline()
	pipe.Del(ctx, key)
	pipe.Publish(ctx, iv.channel, key)
	if _, err := pipe.Exec(ctx); err != nil {
		return unavailable("del", err)
	}
	return nil
}

// stop ends the subscriber goroutine and waits for it. It is idempotent.
func (iv *invalidator) stop() {
	iv.cancel()
	iv.mu.Lock()
	iv.closed = true
	if iv.ps != nil {
		_ = iv.ps.Close() // unblocks a pending receive
	}
	iv.mu.Unlock()
	<-iv.done
}

// run keeps the subscription established until ctx ends, waiting with
// exponential backoff between attempts.
func (iv *invalidator) run(ctx context.Context) {
	defer close(iv.done)
	backoff := invalidationMinBackoff
	failing := false // an attempt failed since the last established session
	for {
		established, err := iv.session(ctx)
		iv.setDown()
		if ctx.Err() != nil {
			return
		}
		switch {
		case established:
			backoff = invalidationMinBackoff
			iv.log.Warn("cache invalidation subscription lost; the local cache layer is bypassed while Redis answers",
				"channel", iv.channel, "error", err)
		case !failing:
			iv.log.Warn("cache invalidation subscription unavailable; retrying", "channel", iv.channel, "error", err)
		default:
			iv.log.Debug("cache invalidation subscription still unavailable", "channel", iv.channel, "error", err)
		}
		failing = !established
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, invalidationMaxBackoff)
	}
}

// setDown marks the subscription down. The order matters: a fill that read
// up == true before this sees the epoch change and is undone.
func (iv *invalidator) setDown() {
	iv.up.Store(false)
	iv.epoch.Add(1)
}

// session subscribes once and applies invalidations until the subscription
// fails or ctx ends. established reports whether the subscription was up.
func (iv *invalidator) session(ctx context.Context) (established bool, err error) {
	ps := iv.redis.client.Subscribe(ctx) // no channel yet: no I/O
	defer ps.Close()
	iv.mu.Lock()
	if iv.closed {
		iv.mu.Unlock()
		return false, ctx.Err()
	}
	iv.ps = ps
	iv.mu.Unlock()
	defer func() {
		iv.mu.Lock()
		iv.ps = nil
		iv.mu.Unlock()
	}()

	if err := ps.Subscribe(ctx, iv.channel); err != nil {
		return false, err
	}
	msg, err := ps.ReceiveTimeout(ctx, max(iv.redis.client.Options().ReadTimeout, invalidationPingInterval))
	if err != nil {
		return false, err
	}
	if sub, ok := msg.(*redis.Subscription); !ok || sub.Kind != "subscribe" || sub.Channel != iv.channel {
		return false, fmt.Errorf("cache: unexpected reply %T to SUBSCRIBE", msg)
	}
	// Deletions published while there was no subscription were missed:
	// start again from an empty local layer, then trust the channel.
	iv.local.Clear()
	iv.epoch.Add(1)
	iv.up.Store(true)
	iv.log.Debug("cache invalidation subscription established; local cache layer cleared", "channel", iv.channel)

	pingSent := false
	for {
		msg, err := ps.ReceiveTimeout(ctx, invalidationPingInterval)
		if err != nil {
			if !isTimeout(err) || pingSent || ctx.Err() != nil {
				return true, err
			}
			if err := ps.Ping(ctx); err != nil {
				return true, err
			}
			pingSent = true
			continue
		}
		pingSent = false
		switch m := msg.(type) {
		case *redis.Message:
			// Bump the epoch before deleting: see Layered.Get.
			iv.epoch.Add(1)
			_ = iv.local.Delete(ctx, m.Payload)
		case *redis.Subscription:
			if m.Kind != "subscribe" {
				return true, fmt.Errorf("cache: invalidation channel %s: unexpected %s", m.Channel, m.Kind)
			}
		}
	}
}

// isTimeout reports whether err is a read deadline expiring.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
