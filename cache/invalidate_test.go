package cache_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fhirgate/fhirgate/cache"
	"github.com/fhirgate/fhirgate/internal/testredis"
)

// invalidationDeadline is the promise under test: a deletion reaches every
// instance's local layer within one second.
const invalidationDeadline = time.Second

// newInvalidating returns a Layered with invalidation on channel, closed when
// t ends, once its subscription is established.
func newInvalidating(t testing.TB, local *cache.Memory, r *cache.Redis, channel string) *cache.Layered {
	t.Helper()
	l := cache.NewLayered(local, r, cache.WithInvalidation(channel), cache.WithLogger(testLogger(t)))
	t.Cleanup(func() { _ = l.Close() })
	waitSubscribed(t, l)
	return l
}

// testLogger writes to the test's output, shown only when it fails or with
// -v. Every Layered using it is closed before its test ends.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func waitSubscribed(t testing.TB, l *cache.Layered) {
	t.Helper()
	if err := eventually(5*time.Second, func() error {
		if !l.Subscribed() {
			return errors.New("invalidation subscription not established")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// waitUnsubscribed waits until l notices that its subscription is gone.
func waitUnsubscribed(t testing.TB, l *cache.Layered) {
	t.Helper()
	if err := eventually(5*time.Second, func() error {
		if l.Subscribed() {
			return errors.New("the cache still reports a subscription with Redis down")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// waitLocalMiss waits up to d for key to leave l's local layer.
func waitLocalMiss(t testing.TB, l *cache.Layered, key string, d time.Duration) {
	t.Helper()
	if err := eventually(d, func() error {
		if v, ok, _ := l.Local().Get(context.Background(), key); ok {
			return errors.New("local layer still holds " + strconv.Quote(key) + " = " + strconv.Quote(string(v)))
		}
		return nil
	}); err != nil {
		t.Fatalf("after %v: %v", d, err)
	}
}

// twoInstances returns two Layered caches, each with its own Memory and Redis
// client, sharing one Redis and one invalidation channel.
func twoInstances(t *testing.T, srv *testredis.Server) (a, b *cache.Layered) {
	ch := prefix(t) + "inval"
	a = newInvalidating(t, cache.NewMemory(1000, nil), newRedis(t, srv), ch)
	b = newInvalidating(t, cache.NewMemory(1000, nil), newRedis(t, srv), ch)
	return a, b
}

func TestLayeredInvalidationAcrossInstances(t *testing.T) {
	ctx := context.Background()
	a, b := twoInstances(t, testredis.Start(t))
	p := prefix(t)

	for _, tc := range []struct {
		name             string
		setter, deleter  *cache.Layered
		reader           *cache.Layered
		key              string
		readerFillsLocal bool
	}{
		{"set on A, deleted on A", a, a, b, p + "aa", true},
		{"set on A, deleted on B", a, b, b, p + "ab", true},
		{"set on B, deleted on A", b, a, b, p + "ba", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mustSet(t, tc.setter, tc.key, []byte("caller"), time.Hour)
			assertGet(t, tc.reader, tc.key, []byte("caller"))
			if _, ok, _ := tc.reader.Local().Get(ctx, tc.key); !ok {
				t.Fatal("reader's local layer was not filled")
			}
			if tc.readerFillsLocal {
				if _, ok, _ := a.Local().Get(ctx, tc.key); !ok {
					t.Fatal("setter's local layer was not filled")
				}
			}
			if err := tc.deleter.Delete(ctx, tc.key); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			for _, l := range []*cache.Layered{a, b} {
				waitLocalMiss(t, l, tc.key, invalidationDeadline)
				assertMiss(t, l, tc.key)
			}
		})
	}

	// Other keys are untouched by an invalidation.
	mustSet(t, a, p+"keep", []byte("k"), time.Hour)
	mustSet(t, a, p+"drop", []byte("d"), time.Hour)
	assertGet(t, b, p+"keep", []byte("k"))
	assertGet(t, b, p+"drop", []byte("d"))
	if err := a.Delete(ctx, p+"drop"); err != nil {
		t.Fatal(err)
	}
	waitLocalMiss(t, b, p+"drop", invalidationDeadline)
	if v, ok, _ := b.Local().Get(ctx, p+"keep"); !ok || string(v) != "k" {
		t.Fatalf("local keep = %q, %v; an unrelated invalidation dropped it", v, ok)
	}
}

// TestLayeredInvalidationRacingFill deletes keys while another instance is
// filling its local layer with them: a fill that read the value before the
// delete must not survive the invalidation.
func TestLayeredInvalidationRacingFill(t *testing.T) {
	ctx := context.Background()
	a, b := twoInstances(t, testredis.Start(t))
	p := prefix(t)
	const keys, readers = 300, 4

	var (
		cur  atomic.Int64 // index of the key being raced, -1 before the first
		stop = make(chan struct{})
		wg   sync.WaitGroup
		errs = make(chan error, readers)
	)
	cur.Store(-1)
	for range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if i := cur.Load(); i >= 0 {
					if _, _, err := b.Get(ctx, p+strconv.FormatInt(i, 10)); err != nil {
						errs <- err
						return
					}
				}
			}
		}()
	}
	for i := range keys {
		k := p + strconv.Itoa(i)
		mustSet(t, a, k, []byte("v"), time.Hour)
		cur.Store(int64(i))
		if err := a.Delete(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Get on B: %v", err)
	}
	// Every key was deleted: none may stay in B's local layer.
	if err := eventually(invalidationDeadline, func() error {
		for i := range keys {
			if _, ok, _ := b.Local().Get(ctx, p+strconv.Itoa(i)); ok {
				return errors.New("deleted key " + strconv.Itoa(i) + " is still in B's local layer")
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestLayeredResubscribeClearsLocal breaks the subscription of instance B in
// two ways; once it is established again, B's local layer must be empty, and
// invalidations must flow again.
func TestLayeredResubscribeClearsLocal(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		// disrupt breaks the subscription and checks the cache meanwhile.
		disrupt func(t *testing.T, srv *testredis.Server, b *cache.Layered, key string)
	}{
		{"redis restarted", func(t *testing.T, srv *testredis.Server, b *cache.Layered, key string) {
			srv.Stop()
			waitUnsubscribed(t, b)
			// Redis down: the local entry still serves (SPEC §5).
			assertGet(t, b, key, []byte("v"))
			srv.Restart()
		}},
		{"subscription connection killed", func(t *testing.T, srv *testredis.Server, b *cache.Layered, key string) {
			admin := newRedis(t, srv)
			n, err := admin.Client().ClientKillByFilter(ctx, "TYPE", "pubsub").Result()
			if err != nil || n < 2 {
				t.Fatalf("CLIENT KILL TYPE pubsub = %d, %v; want both subscriptions killed", n, err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := testredis.Start(t)
			a, b := twoInstances(t, srv)
			p := prefix(t)
			mustSet(t, a, p+"k", []byte("v"), time.Hour)
			assertGet(t, b, p+"k", []byte("v"))
			if _, ok, _ := b.Local().Get(ctx, p+"k"); !ok {
				t.Fatal("B's local layer was not filled")
			}

			tc.disrupt(t, srv, b, p+"k")

			// Only the re-subscription can drop the entry: its TTL is an
			// hour and nobody deleted it.
			waitLocalMiss(t, b, p+"k", 5*time.Second)
			waitSubscribed(t, a)
			waitSubscribed(t, b)
			if n := b.Local().Len(); n != 0 {
				t.Fatalf("B's local layer holds %d entries after re-subscribing, want 0", n)
			}

			// Invalidations reach B again. A's command pool may still be
			// recovering from the restart: retry its first write.
			if err := eventually(5*time.Second, func() error {
				return a.Set(ctx, p+"again", []byte("v2"), time.Hour)
			}); err != nil {
				t.Fatalf("Set after the disruption: %v", err)
			}
			assertGet(t, b, p+"again", []byte("v2"))
			if _, ok, _ := b.Local().Get(ctx, p+"again"); !ok {
				t.Fatal("B's local layer is not filled again after re-subscribing")
			}
			if err := a.Delete(ctx, p+"again"); err != nil {
				t.Fatal(err)
			}
			waitLocalMiss(t, b, p+"again", invalidationDeadline)
		})
	}
}

// TestLayeredWithoutSubscription runs an instance whose Redis user may not
// subscribe, so that its subscription stays down while Redis answers: it must
// read Redis first, never fill its local layer, and fall back to the local
// layer only when Redis is down.
func TestLayeredWithoutSubscription(t *testing.T) {
	ctx := context.Background()
	srv := testredis.Start(t)
	admin := newRedis(t, srv)
	// A user allowed every key and command but no pub/sub channel.
	if err := admin.Client().Do(ctx, "ACL", "SETUSER", "nosub", "on", ">pw", "~*", "+@all", "resetchannels").Err(); err != nil {
		t.Fatalf("ACL SETUSER: %v", err)
	}
	u := "redis://nosub:pw@" + srv.Addr() + "/0"
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	r, err := cache.NewRedis(cctx, u)
	if err != nil {
		t.Fatalf("NewRedis as nosub: %v", err)
	}
	t.Cleanup(func() { _ = r.Close() })
	ch := prefix(t) + "inval"
	b := cache.NewLayered(cache.NewMemory(100, nil), r, cache.WithInvalidation(ch), cache.WithLogger(testLogger(t)))
	t.Cleanup(func() { _ = b.Close() })
	a := newInvalidating(t, cache.NewMemory(100, nil), newRedis(t, srv), ch)
	p := prefix(t)

	mustSet(t, a, p+"k", []byte("v"), time.Hour)
	assertGet(t, b, p+"k", []byte("v"))
	if _, ok, _ := b.Local().Get(ctx, p+"k"); ok {
		t.Fatal("a Redis hit filled the local layer without a subscription")
	}
	if b.Subscribed() {
		t.Fatal("Subscribed() = true for a user that may not subscribe")
	}

	// B's own Set writes its local layer, but Redis stays the authority:
	// a deletion B cannot hear about is seen at once.
	mustSet(t, b, p+"own", []byte("mine"), time.Hour)
	if _, ok, _ := b.Local().Get(ctx, p+"own"); !ok {
		t.Fatal("Set did not write the local layer")
	}
	if err := a.Delete(ctx, p+"own"); err != nil {
		t.Fatal(err)
	}
	assertMiss(t, b, p+"own")

	// With Redis down, B's local entries still serve.
	mustSet(t, b, p+"fallback", []byte("f"), time.Hour)
	srv.Stop()
	assertGet(t, b, p+"fallback", []byte("f"))
	if _, _, err := b.Get(ctx, p+"absent"); !errors.Is(err, cache.ErrUnavailable) {
		t.Fatalf("Get of a key in neither layer with Redis down: err = %v, want ErrUnavailable", err)
	}
}

func TestLayeredDeleteWithRedisDown(t *testing.T) {
	ctx := context.Background()
	srv := testredis.Start(t)
	_, b := twoInstances(t, srv)
	p := prefix(t)
	mustSet(t, b, p+"k", []byte("v"), time.Hour)
	srv.Stop()
	if err := b.Delete(ctx, p+"k"); !errors.Is(err, cache.ErrUnavailable) {
		t.Fatalf("Delete with Redis down: err = %v, want ErrUnavailable", err)
	}
	if _, ok, _ := b.Local().Get(ctx, p+"k"); ok {
		t.Fatal("Delete with Redis down left the local entry")
	}
}

func TestLayeredCloseStopsSubscriber(t *testing.T) {
	srv := testredis.Start(t)
	admin := newRedis(t, srv)
	ch := prefix(t) + "inval"
	l := cache.NewLayered(cache.NewMemory(10, nil), newRedis(t, srv), cache.WithInvalidation(ch), cache.WithLogger(testLogger(t)))
	waitSubscribed(t, l)
	subscribers := func() int64 {
		n, err := admin.Client().PubSubNumSub(context.Background(), ch).Result()
		if err != nil {
			t.Fatalf("PUBSUB NUMSUB: %v", err)
		}
		return n[ch]
	}
	if n := subscribers(); n != 1 {
		t.Fatalf("subscribers before Close = %d, want 1", n)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = l.Close() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
	if l.Subscribed() {
		t.Fatal("Subscribed() = true after Close")
	}
	if err := eventually(5*time.Second, func() error {
		if n := subscribers(); n != 0 {
			return errors.New("subscriber still registered after Close: " + strconv.FormatInt(n, 10))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func TestWithInvalidationNeedsRedis(t *testing.T) {
	l := cache.NewLayered(cache.NewMemory(10, nil), cache.NewMemory(10, nil), cache.WithInvalidation(""))
	defer l.Close()
	if l.Subscribed() {
		t.Fatal("Subscribed() = true over a shared cache that is not Redis")
	}
	// It behaves as a plain Layered: local-first, filled from the shared layer.
	mustSet(t, l, "k", []byte("v"), time.Hour)
	assertGet(t, l, "k", []byte("v"))
	if _, ok, _ := l.Local().Get(context.Background(), "k"); !ok {
		t.Fatal("local layer not written")
	}
}

// freezeProxy forwards TCP connections to a backend and can stop forwarding
// without closing them: a silently dead network path, which only a
// keep-alive PING can reveal.
type freezeProxy struct {
	ln      net.Listener
	backend string
	mu      sync.Mutex
	cond    *sync.Cond
	frozen  bool
	closed  bool
	conns   []net.Conn
}

func startFreezeProxy(t *testing.T, backend string) *freezeProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &freezeProxy{ln: ln, backend: backend}
	p.cond = sync.NewCond(&p.mu)
	go p.serve()
	t.Cleanup(p.close)
	return p
}

func (p *freezeProxy) addr() string { return p.ln.Addr().String() }

func (p *freezeProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		b, err := net.Dial("tcp", p.backend)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, b)
		p.mu.Unlock()
		go p.pipe(c, b)
		go p.pipe(b, c)
	}
}

// pipe copies src to dst, holding each chunk while the proxy is frozen.
func (p *freezeProxy) pipe(src, dst net.Conn) {
	defer src.Close()
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			for p.frozen && !p.closed {
				p.cond.Wait()
			}
			p.mu.Unlock()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *freezeProxy) setFrozen(f bool) {
	p.mu.Lock()
	p.frozen = f
	p.cond.Broadcast()
	p.mu.Unlock()
}

// dropAll closes every forwarded connection, as a network path that comes
// back without the old connections would.
func (p *freezeProxy) dropAll() {
	p.mu.Lock()
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

func (p *freezeProxy) close() {
	_ = p.ln.Close()
	p.mu.Lock()
	p.closed = true
	p.cond.Broadcast()
	p.mu.Unlock()
	p.dropAll()
}

// TestLayeredDetectsSilentlyDeadSubscription freezes B's network path to
// Redis: no error ever reaches B, yet it must notice within about a second
// that its subscription is gone, keep serving its local entries while Redis
// does not answer, and clear them once the path is back.
func TestLayeredDetectsSilentlyDeadSubscription(t *testing.T) {
	ctx := context.Background()
	srv := testredis.Start(t)
	proxy := startFreezeProxy(t, srv.Addr())
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	rb, err := cache.NewRedis(cctx, "redis://"+proxy.addr()+"/0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rb.Close() })
	ch := prefix(t) + "inval"
	a := newInvalidating(t, cache.NewMemory(100, nil), newRedis(t, srv), ch)
	b := newInvalidating(t, cache.NewMemory(100, nil), rb, ch)
	p := prefix(t)
	mustSet(t, a, p+"k", []byte("v"), time.Hour)
	assertGet(t, b, p+"k", []byte("v"))

	proxy.setFrozen(true)
	frozenAt := time.Now()
	if err := eventually(5*time.Second, func() error {
		if b.Subscribed() {
			return errors.New("B still trusts a subscription whose path is frozen")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("dead subscription noticed after %v", time.Since(frozenAt))
	// Redis does not answer B: its local entry still serves.
	assertGet(t, b, p+"k", []byte("v"))

	proxy.dropAll()
	proxy.setFrozen(false)
	waitLocalMiss(t, b, p+"k", 5*time.Second)
	waitSubscribed(t, b)
}

// TestLayeredGetCurrentWithRedisDown: with Redis down, Get still serves the
// local copy (availability), but GetCurrent reports the failure so that
// callers holding security state read their source instead.
func TestLayeredGetCurrentWithRedisDown(t *testing.T) {
	ctx := context.Background()
	srv := testredis.Start(t)
	a, b := twoInstances(t, srv)
	p := prefix(t)
	mustSet(t, a, p+"state", []byte("active"), time.Hour)
	assertGet(t, b, p+"state", []byte("active"))
	if v, ok, err := b.GetCurrent(ctx, p+"state"); err != nil || !ok || string(v) != "active" {
		t.Fatalf("GetCurrent with Redis up = %q, %v, %v", v, ok, err)
	}
	srv.Stop()
	waitUnsubscribed(t, b)
	assertGet(t, b, p+"state", []byte("active"))
	if _, ok, err := b.GetCurrent(ctx, p+"state"); ok || !errors.Is(err, cache.ErrUnavailable) {
		t.Fatalf("GetCurrent with Redis down = %v, %v; want ErrUnavailable and no value", ok, err)
	}
}
