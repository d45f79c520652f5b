package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/fhirgate/fhirgate/internal/loadtest"
	"github.com/fhirgate/fhirgate/internal/testidp"
)

// Scenario names, in the order they run.
const (
	scBaseline        = "baseline"
	scBaselineHeader  = "baseline+header"
	scLocalToken      = "local-token"
	scExternalCached  = "external-cached"
	scExternal10k     = "external-10k"
	scExternalCold    = "external-cold"
	scForgedJWKS      = "forged-jwks"
	scCachedRedisOnly = "external-cached-redis-only"
)

// allScenarios lists every scenario in run order.
var allScenarios = []string{
	scBaseline, scBaselineHeader, scLocalToken, scExternalCached, scExternal10k, scExternalCold, scForgedJWKS, scCachedRedisOnly,
}

// forgedTokens is how many distinct forged tokens forged-jwks cycles through.
const forgedTokens = 256

// load is what a scenario hands to the common runner.
type load struct {
	request func(w int) (*http.Request, error)
	expect  int
	// tokens, when set, counts the distinct tokens the requests carried.
	tokens *atomic.Int64
	// note is added to the scenario's row.
	note string
}

// bench runs the scenarios against one environment and collects the rows.
type bench struct {
	env    *env
	f      *flags
	client *http.Client

	progress func(format string, args ...any)

	cachedToken string // the one external token of external-cached
	rows        []row
	mem         memoryReport
}

// get returns a request maker for GET url with the Authorization header
// value auth ("" for none).
func get(url, auth string) func(int) (*http.Request, error) {
	return func(int) (*http.Request, error) {
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err == nil && auth != "" {
			req.Header["Authorization"] = []string{auth}
		}
		return req, err
	}
}

// token signs a fresh ES256 token (new jti) for the benchmark user at idp.
func token(idp *testidp.IdP, opts ...testidp.TokenOption) (string, error) {
	return idp.SignToken(idp.Claims(benchSubject, time.Hour), append([]testidp.TokenOption{testidp.ES256()}, opts...)...)
}

func (b *bench) readURL() string {
	return b.env.main.url + "fhir/R4/Practitioner/" + b.env.practitioner
}

// preflight checks that both the no-auth route and an external token read
// the practitioner, so that a broken setup fails loudly instead of filling
// the table with errors.
func (b *bench) preflight(ctx context.Context) error {
	tok, err := token(b.env.idp)
	if err != nil {
		return err
	}
	b.cachedToken = tok
	checks := []struct{ what, url, auth string }{
		{"no-auth baseline route", b.env.main.url + "_bench/noauth/fhir/R4/Practitioner/" + b.env.practitioner, ""},
		{"external token", b.readURL(), "Bearer " + tok},
	}
	for _, c := range checks {
		if failed, first := loadtest.Each(ctx, b.client, 1, 1, 30*time.Second, 0, get(c.url, c.auth)); failed > 0 {
			return fmt.Errorf("preflight: %s: %s", c.what, first)
		}
	}
	return nil
}

// prepare returns the load of scenario name, or a reason to skip it.
func (b *bench) prepare(ctx context.Context, name string) (l load, skip string, err error) {
	switch name {
	case scBaseline:
		return load{request: get(b.env.main.url+"_bench/noauth/fhir/R4/Practitioner/"+b.env.practitioner, "")}, "", nil

	case scBaselineHeader:
		// The baseline read carrying the cached scenario's Authorization
		// header, which the no-auth route ignores: what moving a ~1 KB
		// header costs, apart from checking it.
		return load{request: get(b.env.main.url+"_bench/noauth/fhir/R4/Practitioner/"+b.env.practitioner, "Bearer "+b.cachedToken)}, "", nil

	case scLocalToken:
		local, err := b.localToken(ctx)
		if err != nil {
			return l, "", err
		}
		return load{request: get(b.readURL(), "Bearer "+local)}, "", nil

	case scExternalCached:
		return load{request: get(b.readURL(), "Bearer "+b.cachedToken)}, "", nil

	case scExternal10k:
		auth := make([]string, b.f.distinct)
		for i := range auth {
			tok, err := token(b.env.idp)
			if err != nil {
				return l, "", err
			}
			auth[i] = "Bearer " + tok
		}
		url := b.readURL()
		warm := func(i int) (*http.Request, error) { return get(url, auth[i])(0) }
		t0 := time.Now()
		failed, first := loadtest.Each(ctx, b.client, b.f.warmConcurrency, len(auth), 5*time.Minute, 0, warm)
		took := time.Since(t0).Seconds()
		b.progress("warmed %d tokens in %.1fs (%d failed)", len(auth), took, failed)
		l.note = fmt.Sprintf("warmed %d tokens in %.1fs", len(auth), took)
		if failed > 0 {
			// Those tokens stay cold: the measured phase shows what they cost.
			l.note += fmt.Sprintf(", %d failed (first: %s)", failed, first)
		}
		next := make([]int, b.f.concurrency) // per-worker position, spread over the set
		for w := range next {
			next[w] = w * len(auth) / len(next)
		}
		l.request = func(w int) (*http.Request, error) {
			i := next[w]
			next[w] = (i + 1) % len(auth)
			return warm(i)
		}
		return l, "", nil

	case scExternalCold:
		var n atomic.Int64
		url := b.readURL()
		return load{tokens: &n, request: func(int) (*http.Request, error) {
			tok, err := token(b.env.idp)
			if err != nil {
				return nil, err
			}
			n.Add(1)
			return get(url, "Bearer "+tok)(0)
		}}, "", nil

	case scForgedJWKS:
		auth := make([]string, forgedTokens)
		for i := range auth {
			tok, err := b.env.jwks.SignToken(b.env.jwks.Claims(benchSubject, time.Hour), testidp.WithForeignKey())
			if err != nil {
				return l, "", err
			}
			auth[i] = "Bearer " + tok
		}
		var next atomic.Uint64
		url := b.readURL()
		return load{expect: http.StatusUnauthorized, request: func(int) (*http.Request, error) {
			return get(url, auth[next.Add(1)%forgedTokens])(0)
		}}, "", nil

	case scCachedRedisOnly:
		second, err := b.env.startSecond(ctx)
		if err != nil {
			return l, "", err
		}
		return load{request: get(second.url+"fhir/R4/Practitioner/"+b.env.practitioner, "Bearer "+b.cachedToken)}, "", nil
	}
	return l, "", fmt.Errorf("unknown scenario %q", name)
}

// localToken exchanges the cached external token for a local access token
// at /oauth2/userinfo.
func (b *bench) localToken(ctx context.Context) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.env.main.url+"oauth2/userinfo", nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+b.cachedToken)
	resp, err := b.client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var out struct {
		AccessToken string `json:"access_token"`
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("userinfo: status %d", resp.StatusCode)
	}
	if err := json.Unmarshal(body, &out); err != nil || out.AccessToken == "" {
		return "", errors.New("userinfo gave no access_token")
	}
	return out.AccessToken, nil
}

// userInfoCalls is the sum of both IdPs' userinfo counters.
func (b *bench) userInfoCalls() int64 { return b.env.idp.UserInfoCalls() + b.env.jwks.UserInfoCalls() }

// run measures scenario name and appends its row.
func (b *bench) run(ctx context.Context, name string) error {
	r := row{Scenario: name, Target: targets[name]}
	l, skip, err := b.prepare(ctx, name)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if skip != "" {
		r.Verdict, r.Note = verdictSkipped, skip
		b.rows = append(b.rows, r)
		return nil
	}
	var calls0, tokens0 int64
	res, err := loadtest.Run(ctx, loadtest.Spec{
		Client: b.client, Concurrency: b.f.concurrency, Warmup: b.f.warmup, Duration: b.f.duration,
		Request: l.request, Expect: l.expect,
		BeforeMeasure: func() {
			calls0 = b.userInfoCalls()
			if l.tokens != nil {
				tokens0 = l.tokens.Load()
			}
		},
	})
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	r.fill(res)
	r.Note = l.note
	r.IdPCalls = b.userInfoCalls() - calls0
	if l.tokens != nil {
		r.Tokens = l.tokens.Load() - tokens0
	}
	if name == scExternal10k {
		if rss, err := loadtest.RSS(); err == nil {
			b.mem.RSSAfter10kMiB = mib(rss)
			r.Note = join(r.Note, fmt.Sprintf("RSS after: %.0f MiB", mib(rss)))
		}
	}
	b.rows = append(b.rows, r)
	return nil
}

// rebaseline measures the baseline a second time, after the other
// scenarios, and judges every row against the mean of both baseline runs, so
// that a machine that got busier or quieter during the run shows as drift
// instead of skewing the ratios.
func (b *bench) rebaseline(ctx context.Context) error {
	first := b.rows[0] // parseFlags puts baseline first
	if len(b.rows) > 1 {
		if err := b.run(ctx, scBaseline); err != nil {
			return err
		}
		again := b.rows[len(b.rows)-1]
		b.rows = b.rows[:len(b.rows)-1]
		mean := (first.RPS + again.RPS) / 2
		b.rows[0].RPS = mean
		b.rows[0].Note = fmt.Sprintf("mean of a run before (%.0f req/s) and after (%.0f req/s) the others; drift %+.0f%%",
			first.RPS, again.RPS, 100*(again.RPS-first.RPS)/first.RPS)
	}
	base := b.rows[0].RPS
	for i := range b.rows {
		r := &b.rows[i]
		if r.Verdict == verdictSkipped || base <= 0 {
			continue
		}
		ratio := r.RPS / base
		r.Ratio = &ratio
		judge(r)
	}
	return nil
}

// join joins two notes with "; ", skipping an empty one.
func join(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "; " + b
}
