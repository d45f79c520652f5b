// Package extauth validates bearer tokens issued by the operator's external
// identity providers (SPEC §5 steps 3 to 5) and caches the outcome (steps 4
// and 7). An Authenticator is built once from the provider configuration, like
// go-oidc's IDTokenVerifier: each check is a named step and every failure is
// an *Error value whose Kind says how to answer (401, 400 or 503).
//
// # Order of the checks
//
// Parse runs the pre-checks without any network call. Authenticate then reads
// the cache: the key binds the SHA-256 of the exact token bytes, and an entry
// is only ever written after the signature (when the provider has a jwksUri)
// and the IdP's userinfo endpoint accepted those bytes, so a hit needs no
// new signature check. On a miss, concurrent requests for the same token share
// one validation (singleflight): the JWKS signature check, then one userinfo
// call, then the caller's resolve function; a forged token costs no userinfo
// call and writes nothing.
//
// # Userinfo answers
//
//   - 200 with a JSON object (or application/jwt): valid, unless the response
//     has a sub that differs from the token's (401 userinfo_sub_mismatch,
//     cached as a negative entry). A 200 with any other media type or an
//     unusable body is a 503 (idp_bad_response): fail closed without telling
//     the client its token is bad.
//   - 400, 401, 403: the IdP refused this token (RFC 6750 §3.1): 401 and a
//     negative entry for 60 s (never past exp).
//   - 429, 5xx, timeout, connection error, body over 64 KiB: 503 with the
//     IdP's Retry-After (seconds or HTTP date, 1 s to 1 h), else 30 s; nothing
//     is cached.
//   - 3xx (redirects are never followed), 404 and every other status: the
//     userInfoUrl is wrong, not the token: 503 idp_misconfigured, logged at
//     error level, nothing cached.
//
// Cache failures are logged, counted and treated as misses: they never fail a
// request. The raw token is never logged or stored; logs carry its issuer and
// a SHA-256 prefix (Token.Fingerprint).
package extauth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"

	"github.com/fhirgate/fhirgate/cache"
	"github.com/fhirgate/fhirgate/config"
)

const (
	// NegativeTTL is how long a token the IdP refused stays refused without a
	// new userinfo call (never longer than until the token's exp).
	NegativeTTL = 60 * time.Second
	// DefaultRetryAfter is the Retry-After given when the IdP sent none.
	DefaultRetryAfter = 30 * time.Second
	// MaxRetryAfter caps a Retry-After taken from the IdP.
	MaxRetryAfter = time.Hour
	// ResolveTimeout bounds the caller's resolve function within one validation.
	ResolveTimeout = 10 * time.Second
)

// Options are the dependencies of an Authenticator.
type Options struct {
	// Cache stores validations (required): in-process, Redis or layered.
	Cache cache.Cache
	// HTTPClient makes the userinfo and JWKS calls. Its CheckRedirect is
	// replaced so that redirects are never followed. Default: a client over
	// http.DefaultTransport.
	HTTPClient *http.Client
	// Now is the clock for token times and cache TTLs. Default: time.Now.
	Now func() time.Time
	// Logger receives warnings (cache trouble, IdP trouble). Default: slog.Default().
	Logger *slog.Logger
	// Registerer, when set, receives the package's Prometheus collectors.
	Registerer prometheus.Registerer
	// Locker, when set, makes the instances that share Cache validate each
	// new token once between them (see awaitCluster).
	Locker Locker
}

// Result is what a successful external login resolves to (SPEC §5 steps 6
// and 7). It is cached as JSON under the token's CacheKey.
type Result struct {
	Project    string `json:"project"`
	Membership string `json:"membership"`
	Profile    string `json:"profile"`
	Login      string `json:"login"`
}

// ResolveFunc maps a validated token to a local user and records the Login.
// Its errors are returned by Authenticate unchanged and are never cached.
type ResolveFunc func(ctx context.Context, tok *Token) (*Result, error)

// Authenticator validates external tokens. It is safe for concurrent use.
type Authenticator struct {
	providers map[string]*provider
	cache     cache.Cache
	client    *http.Client
	now       func() time.Time
	log       *slog.Logger
	metrics   *metrics
	group     singleflight.Group
	locker    Locker
	parsed    *parsedMemo

	ctx    context.Context // owns the JWKS refresh goroutines
	cancel context.CancelFunc
}

// provider is one configured IdP with its derived, ready-to-use settings.
type provider struct {
	cfg   config.Provider
	algs  map[string]bool
	types []string // normalized acceptedTypes
	jwks  *jwksVerifier
}

// New builds an Authenticator for providers. It makes no network call: JWKS
// are fetched on first use. Close releases the JWKS refresh goroutines.
func New(providers []config.Provider, opts Options) (*Authenticator, error) {
	if opts.Cache == nil {
		return nil, errors.New("extauth: Options.Cache is required")
	}
	a := &Authenticator{
		providers: make(map[string]*provider, len(providers)),
		cache:     opts.Cache,
		now:       opts.Now,
		log:       opts.Logger,
		locker:    opts.Locker,
	}
	if a.now == nil {
		a.now = time.Now
	}
	if a.log == nil {
		a.log = slog.Default()
	}
	a.parsed = newParsedMemo(a.now)
	a.client = noRedirectClient(opts.HTTPClient)
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("extauth: metrics: %w", err)
	}
	a.metrics = m
	a.ctx, a.cancel = context.WithCancel(context.Background())

	for i := range providers {
		p, err := newProvider(providers[i])
		if err != nil {
			a.cancel()
			return nil, fmt.Errorf("extauth: externalAuthProviders[%d]: %w", i, err)
		}
		if _, dup := a.providers[p.cfg.Issuer]; dup {
			a.cancel()
			return nil, fmt.Errorf("extauth: externalAuthProviders[%d]: duplicate issuer %q", i, p.cfg.Issuer)
		}
		if p.cfg.JWKSURI != "" {
			p.jwks = newJWKSVerifier(a, &p.cfg)
		}
		a.providers[p.cfg.Issuer] = p
	}
	return a, nil
}

// newProvider checks the settings Authenticator relies on. The config
// package validates them already; this is a second, fail-closed line.
func newProvider(c config.Provider) (*provider, error) {
	c.Audience = append(config.StringList(nil), c.Audience...)
	c.Algorithms = append([]string(nil), c.Algorithms...)
	c.AcceptedTypes = append([]string(nil), c.AcceptedTypes...)
	c.Projects = append([]string(nil), c.Projects...)
	switch {
	case c.Issuer == "":
		return nil, errors.New("issuer is required")
	case c.UserInfoURL == "":
		return nil, errors.New("userInfoUrl is required")
	case len(c.Algorithms) == 0:
		return nil, errors.New("algorithms is empty")
	case c.Leeway.Duration < 0:
		return nil, errors.New("leeway is negative")
	case c.UserInfoTimeout.Duration <= 0:
		return nil, errors.New("userInfoTimeout must be positive")
	case c.CacheTTL.Duration <= 0:
		return nil, errors.New("cacheTtl must be positive")
	}
	p := &provider{cfg: c, algs: make(map[string]bool, len(c.Algorithms))}
	for _, alg := range c.Algorithms {
		if forbiddenAlg(alg) || keyKindForAlg(alg) == keyUnknown {
			return nil, fmt.Errorf("algorithm %q is not allowed", alg)
		}
		p.algs[alg] = true
	}
	for _, t := range c.AcceptedTypes {
		p.types = append(p.types, normalizeType(t))
	}
	return p, nil
}

// Close stops the JWKS refresh goroutines. The Authenticator must not be used
// afterwards. It does not close the cache.
func (a *Authenticator) Close() error {
	a.cancel()
	return nil
}

// Authenticate validates raw (SPEC §5 steps 3 to 5) and returns the token and
// what it resolves to. On a cache hit it returns the cached Result; the caller
// re-reads the membership and calls Forget when it is gone or inactive. On a
// miss, concurrent calls for the same token share one validation: signature
// check, one userinfo call and one call of resolve, run detached from any one
// caller's cancellation (bounded by the provider's userInfoTimeout plus
// ResolveTimeout). resolve runs with the context of the caller that started
// the validation (its values, not its cancellation), and every caller
// sharing that validation receives a copy of the same Result, Login
// included. A successful Result is cached for min(provider.cacheTtl, exp-now).
//
// Errors are *Error values, except those of resolve, which are returned
// unchanged. The Token is returned whenever Parse accepted raw.
func (a *Authenticator) Authenticate(ctx context.Context, raw string, resolve ResolveFunc) (*Token, *Result, error) {
	if resolve == nil {
		return nil, nil, errors.New("extauth: nil resolve function")
	}
	tok, memoKey := a.parsed.get(raw)
	memoized := tok != nil
	if !memoized {
		var err error
		if tok, err = a.Parse(raw); err != nil {
			return nil, nil, err
		}
	}
	if res, hit, err := a.lookup(ctx, tok); hit {
		if err == nil && !memoized {
			a.parsed.put(memoKey, tok)
		}
		return tok, res, err
	}

	var ran atomic.Bool
	ch := a.group.DoChan(tok.CacheKey, func() (any, error) {
		ran.Store(true)
		a.metrics.flights.Inc()
		p := a.providers[tok.Issuer]
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.flightTimeout())
		defer cancel()
		return a.validate(fctx, p, tok, resolve)
	})
	select {
	case r := <-ch:
		if !ran.Load() {
			a.metrics.collapsed.Inc()
		}
		if r.Err != nil {
			var e *Error
			if errors.As(r.Err, &e) && e == r.Err {
				c := *e // each caller gets its own *Error
				return tok, nil, &c
			}
			return tok, nil, r.Err
		}
		res := *r.Val.(*Result) // a copy per caller
		if !memoized {
			a.parsed.put(memoKey, tok)
		}
		return tok, &res, nil
	case <-ctx.Done():
		return tok, nil, &Error{Kind: KindUnavailable, Reason: ReasonCanceled, RetryAfter: time.Second, Err: ctx.Err()}
	}
}

// flightTimeout bounds one shared validation.
func (p *provider) flightTimeout() time.Duration {
	d := p.cfg.UserInfoTimeout.Duration + ResolveTimeout
	if p.jwks != nil {
		d += jwksHTTPTimeout
	}
	return d
}

// validate is one shared validation after a cache miss.
func (a *Authenticator) validate(ctx context.Context, p *provider, tok *Token, resolve ResolveFunc) (res *Result, err error) {
	defer func() {
		if r := recover(); r != nil {
			a.log.ErrorContext(ctx, "extauth: panic during validation", "token", tok, "panic", fmt.Sprint(r))
			res, err = nil, fmt.Errorf("extauth: panic during validation: %v", r)
		}
	}()
	// A validation that finished between our cache miss and the start of
	// this one has already written its result.
	if res, hit, err := a.lookup(ctx, tok); hit {
		return res, err
	}
	if p.jwks != nil {
		if err := p.jwks.verify(ctx, tok); err != nil {
			return nil, err
		}
	}
	res, done, release, err := a.awaitCluster(ctx, p, tok)
	defer release()
	if done {
		return res, err
	}
	if err := a.userInfo(ctx, p, tok); err != nil {
		var e *Error
		if errors.As(err, &e) && e.negative {
			a.store(ctx, tok, entry{Negative: e.Reason}, NegativeTTL)
		}
		return nil, err
	}
	res, err = resolve(ctx, tok)
	if err != nil {
		return nil, err
	}
	if res == nil {
		return nil, errors.New("extauth: resolve returned no result and no error")
	}
	a.store(ctx, tok, entry{Result: res}, p.cfg.CacheTTL.Duration)
	return res, nil
}

// Forget removes tok's cached validation, for a membership that is gone or
// inactive, or a revoked login. Failures are logged and counted.
func (a *Authenticator) Forget(ctx context.Context, tok *Token) {
	a.group.Forget(tok.CacheKey)
	if err := a.cache.Delete(ctx, tok.CacheKey); err != nil {
		a.metrics.cacheWrites.WithLabelValues("error").Inc()
		a.log.WarnContext(ctx, "extauth: cache delete failed", "token", tok, "error", err)
		return
	}
	a.metrics.cacheWrites.WithLabelValues("ok").Inc()
}

// lookup reads tok's cache entry. hit is false on a miss, on a cache error
// and on an unusable entry; otherwise res or err is the cached outcome.
func (a *Authenticator) lookup(ctx context.Context, tok *Token) (res *Result, hit bool, err error) {
	b, found, cerr := a.cache.Get(ctx, tok.CacheKey)
	if cerr != nil {
		a.metrics.cache.WithLabelValues("error").Inc()
		a.log.WarnContext(ctx, "extauth: cache read failed; validating without cache", "token", tok, "error", cerr)
		return nil, false, nil
	}
	if !found {
		a.metrics.cache.WithLabelValues("miss").Inc()
		return nil, false, nil
	}
	e, derr := decodeEntry(b)
	if derr != nil {
		a.metrics.cache.WithLabelValues("corrupt").Inc()
		a.log.WarnContext(ctx, "extauth: unusable cache entry ignored", "token", tok)
		return nil, false, nil
	}
	// Entries never outlive exp, but a cache with a coarse clock might
	// return one a moment late; the token itself is the authority.
	if !a.now().Before(tok.Expires) {
		a.metrics.cache.WithLabelValues("miss").Inc()
		return nil, false, nil
	}
	if e.Negative != "" {
		a.metrics.cache.WithLabelValues("negative").Inc()
		return nil, true, invalid(ReasonNegativeCache)
	}
	a.metrics.cacheHit.Inc()
	return e.Result, true, nil
}

// store writes e for min(ttl, exp-now); nothing when that is not positive.
func (a *Authenticator) store(ctx context.Context, tok *Token, e entry, ttl time.Duration) {
	if left := tok.Expires.Sub(a.now()); left < ttl {
		ttl = left
	}
	if ttl <= 0 {
		return
	}
	b, err := e.encode()
	if err != nil {
		a.log.ErrorContext(ctx, "extauth: cannot encode cache entry", "token", tok, "error", err)
		return
	}
	if err := a.cache.Set(ctx, tok.CacheKey, b, ttl); err != nil {
		a.metrics.cacheWrites.WithLabelValues("error").Inc()
		a.log.WarnContext(ctx, "extauth: cache write failed", "token", tok, "error", err)
		return
	}
	a.metrics.cacheWrites.WithLabelValues("ok").Inc()
}

// noRedirectClient returns a copy of c (or a default client) that never
// follows redirects: the 3xx response itself is returned.
func noRedirectClient(c *http.Client) *http.Client {
	var out http.Client
	if c != nil {
		out = *c
	} else {
		// The default transport keeps 2 idle connections per host: under
		// concurrent cold validations every other call would dial anew.
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 64
		out.Transport = t
	}
	out.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &out
}
