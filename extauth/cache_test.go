package extauth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/fhirgate/fhirgate/cache"
	"github.com/fhirgate/fhirgate/config"
	"github.com/fhirgate/fhirgate/internal/testredis"
)

func TestCacheTTL(t *testing.T) {
	tests := []struct {
		name     string
		cacheTTL time.Duration
		exp      time.Duration // token exp relative to now
		status   int           // userinfo answer
		want     time.Duration // 0: nothing cached
	}{
		{"exp bounds a result", time.Hour, 90 * time.Second, 200, 90 * time.Second},
		{"cacheTtl bounds a result", 10 * time.Second, time.Hour, 200, 10 * time.Second},
		{"expired within leeway caches nothing", time.Hour, -10 * time.Second, 200, 0},
		{"negative entry lasts 60s", time.Hour, time.Hour, 401, NegativeTTL},
		{"exp bounds a negative entry", time.Hour, 20 * time.Second, 401, 20 * time.Second},
		{"cacheTtl does not bound a negative entry", 10 * time.Second, time.Hour, 401, NegativeTTL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newUserInfoFixture(t, reply(tt.status, "application/json", `{"sub":"alice"}`),
				func(p *config.Provider) { p.CacheTTL = config.Duration{Duration: tt.cacheTTL} })
			raw := craft(rs, fmt.Sprintf(`{"iss":%q,"exp":%d,"sub":"alice"}`, issPlain, at(tt.exp)))
			tok, _, err := f.a.Authenticate(context.Background(), raw, f.resolveFunc)
			if (err == nil) != (tt.status == 200) {
				t.Fatalf("Authenticate() error = %v", err)
			}
			_, ttl, found, err := f.mem.GetWithTTL(context.Background(), tok.CacheKey)
			if err != nil {
				t.Fatal(err)
			}
			if tt.want == 0 {
				if found {
					t.Fatalf("entry cached for %v; want none", ttl)
				}
				return
			}
			if !found || ttl != tt.want {
				t.Fatalf("cached=%v ttl=%v; want ttl %v", found, ttl, tt.want)
			}
		})
	}
}

func TestCacheHitSkipsIdP(t *testing.T) {
	status := 200
	var mu sync.Mutex
	f := newUserInfoFixture(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		s := status
		mu.Unlock()
		reply(s, "application/json", `{"sub":"alice"}`)(w, r)
	}, nil)
	ctx := context.Background()
	tok, _, err := f.a.Authenticate(ctx, bearerToken, f.resolveFunc)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	status = 401 // the IdP would now refuse; the cache answers instead
	mu.Unlock()
	for i := 0; i < 3; i++ {
		_, res, err := f.a.Authenticate(ctx, bearerToken, f.resolveFunc)
		if err != nil || *res != testResult {
			t.Fatalf("cached Authenticate() = %v, %v", res, err)
		}
	}
	if f.calls.Load() != 1 || f.resolve.Load() != 1 {
		t.Fatalf("userinfo calls %d, resolve calls %d; want 1, 1", f.calls.Load(), f.resolve.Load())
	}
	if hits := counterValue(t, f.a.metrics.cache.WithLabelValues("hit")); hits != 3 {
		t.Errorf("cache hits counted = %v; want 3", hits)
	}

	// Forget drops the entry: the next call asks the IdP, which now refuses.
	f.a.Forget(ctx, tok)
	_, _, err = f.a.Authenticate(ctx, bearerToken, f.resolveFunc)
	if e := errorOf(t, err); e.Reason != ReasonUserInfoRejected {
		t.Fatalf("after Forget: %s; want %s", e.Reason, ReasonUserInfoRejected)
	}
	if f.calls.Load() != 2 {
		t.Fatalf("userinfo calls = %d; want 2", f.calls.Load())
	}
}

func TestCacheEntryIgnoredWhenUnusable(t *testing.T) {
	for _, value := range []string{"garbage", "v1\nr\np\nm\nPatient/1\nl", "v2", "v2\nr\np\nm\nPatient/1", "v2\nr\np\nm\nPatient/1\nl\nextra", "v2\nn\n", "v2\nx\ny", `{"v":1,"r":{"project":"p"}}`} {
		t.Run(value, func(t *testing.T) {
			f := newUserInfoFixture(t, reply(200, "application/json", `{"sub":"alice"}`), nil)
			tok, err := f.a.Parse(bearerToken)
			if err != nil {
				t.Fatal(err)
			}
			if err := f.mem.Set(context.Background(), tok.CacheKey, []byte(value), time.Hour); err != nil {
				t.Fatal(err)
			}
			_, res, err := f.a.Authenticate(context.Background(), bearerToken, f.resolveFunc)
			if err != nil || *res != testResult {
				t.Fatalf("Authenticate() = %v, %v; want the resolved result", res, err)
			}
			if f.calls.Load() != 1 {
				t.Fatalf("userinfo calls = %d; want 1", f.calls.Load())
			}
		})
	}
}

func TestResolveErrorsPassThrough(t *testing.T) {
	f := newUserInfoFixture(t, reply(200, "application/json", `{"sub":"alice"}`), nil)
	errNoMember := errors.New("no membership")
	var calls int
	resolve := func(context.Context, *Token) (*Result, error) {
		calls++
		return nil, errNoMember
	}
	for i := 1; i <= 2; i++ {
		_, res, err := f.a.Authenticate(context.Background(), bearerToken, resolve)
		if err != errNoMember || res != nil {
			t.Fatalf("attempt %d: Authenticate() = %v, %v; want the resolve error unchanged", i, res, err)
		}
	}
	if calls != 2 || f.calls.Load() != 2 {
		t.Fatalf("resolve calls %d, userinfo calls %d; want 2, 2 (a resolve error is never cached)", calls, f.calls.Load())
	}

	// A resolve that panics fails the request, not the process.
	_, _, err := f.a.Authenticate(context.Background(), bearerToken, func(context.Context, *Token) (*Result, error) { panic("bug") })
	if err == nil {
		t.Fatal("panicking resolve: no error")
	}
	var e *Error
	if errors.As(err, &e) {
		t.Fatalf("panicking resolve: got *Error %v; want a plain internal error", e)
	}
	// A resolve that returns nothing is an error too.
	_, _, err = f.a.Authenticate(context.Background(), bearerToken, func(context.Context, *Token) (*Result, error) { return nil, nil })
	if err == nil {
		t.Fatal("nil result: no error")
	}
}

func TestCallerCancelDoesNotFailOthers(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	f := newUserInfoFixture(t, func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() { close(entered) })
		<-release
		reply(200, "application/json", `{"sub":"alice"}`)(w, r)
	}, nil)

	ctxA, cancelA := context.WithCancel(context.Background())
	errA := make(chan error, 1)
	go func() {
		_, _, err := f.a.Authenticate(ctxA, bearerToken, f.resolveFunc)
		errA <- err
	}()
	<-entered
	type out struct {
		res *Result
		err error
	}
	outB := make(chan out, 1)
	go func() {
		_, res, err := f.a.Authenticate(context.Background(), bearerToken, f.resolveFunc)
		outB <- out{res, err}
	}()
	cancelA()
	if e := errorOf(t, <-errA); e.Reason != ReasonCanceled || !errors.Is(e, context.Canceled) {
		t.Fatalf("canceled caller: %v; want %s", e, ReasonCanceled)
	}
	close(release)
	b := <-outB
	if b.err != nil || *b.res != testResult {
		t.Fatalf("other caller: %v, %v; want success", b.res, b.err)
	}
	if f.calls.Load() != 1 || f.resolve.Load() != 1 {
		t.Fatalf("userinfo calls %d, resolve calls %d; want 1, 1", f.calls.Load(), f.resolve.Load())
	}
	// The canceled caller's validation still completed and was cached.
	_, res, err := f.a.Authenticate(context.Background(), bearerToken, f.resolveFunc)
	if err != nil || *res != testResult || f.calls.Load() != 1 {
		t.Fatalf("after: %v, %v, calls %d", res, err, f.calls.Load())
	}
}

// TestRedisTTL reads the TTL back from a real Redis: it never exceeds the
// token's remaining lifetime.
func TestRedisTTL(t *testing.T) {
	srv := testredis.Start(t)
	ctx := context.Background()
	rc, err := cache.NewRedis(ctx, srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rc.Close() })

	f := newUserInfoFixture(t, reply(200, "application/json", `{"sub":"alice"}`), nil)
	p := testProvider(issPlain)
	p.UserInfoURL = f.srv.URL + "/userinfo"
	a, err := New([]config.Provider{p}, Options{Cache: rc, Logger: testLogger(t)}) // real clock
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })

	exp := time.Now().Add(90 * time.Second).Unix()
	raw := craft(rs, fmt.Sprintf(`{"iss":%q,"exp":%d,"sub":"alice"}`, issPlain, exp))
	tok, _, err := a.Authenticate(ctx, raw, f.resolveFunc)
	if err != nil {
		t.Fatal(err)
	}
	ttl, err := rc.TTL(ctx, tok.CacheKey)
	if err != nil {
		t.Fatal(err)
	}
	left := time.Until(time.Unix(exp, 0))
	if ttl <= 0 || ttl > left+time.Second || ttl < left-5*time.Second {
		t.Fatalf("Redis TTL = %v; want about exp-now = %v, never more", ttl, left)
	}
	v, found, err := rc.Get(ctx, tok.CacheKey)
	if err != nil || !found {
		t.Fatalf("Get = %v, %v", found, err)
	}
	if string(v) != "v2\nr\np1\nm1\nPractitioner/1\nl1" {
		t.Fatalf("cached value = %s", v)
	}

	// Redis down: requests still succeed through the IdP, and the failure is counted.
	srv.Stop()
	before := f.calls.Load()
	for i := 0; i < 2; i++ {
		_, res, err := a.Authenticate(ctx, raw, f.resolveFunc)
		if err != nil || *res != testResult {
			t.Fatalf("with Redis down: %v, %v; want success", res, err)
		}
	}
	if got := f.calls.Load() - before; got != 2 {
		t.Errorf("userinfo calls with Redis down = %d; want 2", got)
	}
	if n := counterValue(t, a.metrics.cache.WithLabelValues("error")); n < 2 {
		t.Errorf("cache errors counted = %v; want >= 2", n)
	}
}

// counterValue reads a Prometheus counter.
func counterValue(t testing.TB, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestCachedTokenRefusedAfterExpiry: a token that was validated, cached and
// memoized is refused once it expires, without asking the IdP, even when the
// cache has not dropped the entry yet (its clock lags, as a shared cache's
// may).
func TestCachedTokenRefusedAfterExpiry(t *testing.T) {
	f := newUserInfoFixture(t, reply(200, "application/json", `{"sub":"alice"}`), nil)
	now := testNow
	p := testProvider(issPlain)
	p.UserInfoURL = f.srv.URL + "/userinfo"
	a, err := New([]config.Provider{p}, Options{Cache: f.mem, Now: func() time.Time { return now }, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ctx := context.Background()
	for i := 0; i < 2; i++ { // validated, then served from the cache and the memo
		if _, _, err := a.Authenticate(ctx, bearerToken, f.resolveFunc); err != nil {
			t.Fatal(err)
		}
	}
	// Past exp but inside the leeway: the pre-checks pass, but a cached
	// validation is never used past exp (SPEC §5 step 4): the IdP is asked.
	now = testNow.Add(time.Hour + time.Second)
	if _, _, err := a.Authenticate(ctx, bearerToken, f.resolveFunc); err != nil {
		t.Fatal(err)
	}
	if f.calls.Load() != 2 {
		t.Fatalf("userinfo calls %d past exp; want 2 (no cache hit after exp)", f.calls.Load())
	}
	// Past the leeway: refused without asking anyone.
	now = testNow.Add(time.Hour + p.Leeway.Duration + time.Second)
	_, _, err = a.Authenticate(ctx, bearerToken, f.resolveFunc)
	if e := errorOf(t, err); e.Kind != KindInvalid || e.Reason != ReasonExpired {
		t.Fatalf("expired cached token: %v; want %s", err, ReasonExpired)
	}
	if f.calls.Load() != 2 {
		t.Fatalf("userinfo calls %d; want still 2", f.calls.Load())
	}
}
