package extauth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fhirgate/fhirgate/cache"
	"github.com/fhirgate/fhirgate/config"
)

// userInfoFixture is an Authenticator whose only provider's userinfo endpoint
// is an httptest server running handler, on the fixed clock testNow.
type userInfoFixture struct {
	a       *Authenticator
	mem     *cache.Memory
	srv     *httptest.Server
	calls   atomic.Int64 // userinfo requests received
	resolve atomic.Int64 // resolve calls
	badReq  atomic.Value // string: a request header problem seen by the server
	// redirected counts requests to /elsewhere, a redirect target that must
	// never be reached.
	redirected atomic.Int64
}

func newUserInfoFixture(t *testing.T, handler http.HandlerFunc, mutate func(*config.Provider)) *userInfoFixture {
	t.Helper()
	f := &userInfoFixture{mem: cache.NewMemory(0, func() time.Time { return testNow })}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/elsewhere" {
			f.redirected.Add(1)
			_, _ = w.Write([]byte(`{"sub":"alice"}`))
			return
		}
		if r.URL.Path != "/userinfo" {
			f.badReq.Store("unexpected path " + r.URL.Path)
			http.NotFound(w, r)
			return
		}
		f.calls.Add(1)
		if got := r.Header.Get("Accept"); got != "application/json" {
			f.badReq.Store("Accept: " + got)
		}
		if r.Method != http.MethodGet || r.URL.RawQuery != "" {
			f.badReq.Store("method/query: " + r.Method + " " + r.URL.RawQuery)
		}
		handler(w, r)
	}))
	t.Cleanup(f.srv.Close)
	p := testProvider(issPlain)
	p.UserInfoURL = f.srv.URL + "/userinfo"
	if mutate != nil {
		mutate(&p)
	}
	a, err := New([]config.Provider{p}, Options{Cache: f.mem, Now: func() time.Time { return testNow }, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	f.a = a
	return f
}

var testResult = Result{Project: "p1", Membership: "m1", Profile: "Practitioner/1", Login: "l1"}

func (f *userInfoFixture) resolveFunc(_ context.Context, tok *Token) (*Result, error) {
	f.resolve.Add(1)
	r := testResult
	return &r, nil
}

// bearerToken is the token every userinfo test sends: sub alice, exp now+1h.
var bearerToken = craft(rs, claims(issPlain, `"sub":"alice"`))

// checkBearer makes the handler fail the test unless the request carries tok.
func checkBearer(tok string, next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+tok {
			w.WriteHeader(http.StatusTeapot)
			return
		}
		next(w, r)
	}
}

func reply(status int, contentType, body string, headers ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if contentType != "" {
			w.Header().Set("Content-Type", contentType)
		}
		for i := 0; i+1 < len(headers); i += 2 {
			w.Header().Set(headers[i], headers[i+1])
		}
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}
}

func errorOf(t *testing.T, err error) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error = %v (%T); want *Error", err, err)
	}
	return e
}

func TestUserInfoStatusMapping(t *testing.T) {
	httpDate := testNow.Add(120 * time.Second).UTC().Format(http.TimeFormat)
	tests := []struct {
		name    string
		handler http.HandlerFunc
		// want: zero Kind means success.
		kind       Kind
		reason     string
		retryAfter time.Duration
		// cached: a second Authenticate makes no userinfo call.
		cached bool
	}{
		{"200 JSON", reply(200, "application/json", `{"sub":"alice","name":"A"}`), 0, "", 0, true},
		{"200 JSON charset", reply(200, "application/json; charset=utf-8", `{"sub":"alice"}`), 0, "", 0, true},
		{"200 JSON without sub", reply(200, "application/json", `{"email":"a@example.org"}`), 0, "", 0, true},
		{"200 +json", reply(200, "application/scim+json", `{"sub":"alice"}`), 0, "", 0, true},
		{"200 JWT same sub", reply(200, "application/jwt", craft(rs, `{"sub":"alice"}`)), 0, "", 0, true},
		{"200 JWT encrypted", reply(200, "application/jwt", "eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d"), 0, "", 0, true},
		{"200 JSON other sub", reply(200, "application/json", `{"sub":"mallory"}`), KindInvalid, ReasonUserInfoSubMismatch, 0, true},
		{"200 JWT other sub", reply(200, "application/jwt", craft(rs, `{"sub":"mallory"}`)), KindInvalid, ReasonUserInfoSubMismatch, 0, true},
		{"200 JSON sub not a string", reply(200, "application/json", `{"sub":1}`), KindUnavailable, ReasonIdPBadResponse, DefaultRetryAfter, false},
		{"200 JSON duplicate sub", reply(200, "application/json", `{"sub":"alice","sub":"mallory"}`), KindUnavailable, ReasonIdPBadResponse, DefaultRetryAfter, false},
		{"200 JSON case-variant sub", reply(200, "application/json", `{"sub":"alice","SUB":"mallory"}`), KindUnavailable, ReasonIdPBadResponse, DefaultRetryAfter, false},
		{"200 not JSON", reply(200, "application/json", `<html>`), KindUnavailable, ReasonIdPBadResponse, DefaultRetryAfter, false},
		{"200 JSON array", reply(200, "application/json", `[{"sub":"alice"}]`), KindUnavailable, ReasonIdPBadResponse, DefaultRetryAfter, false},
		{"200 HTML login page", reply(200, "text/html", `<html>login</html>`), KindUnavailable, ReasonIdPBadResponse, DefaultRetryAfter, false},
		{"200 no content type", reply(200, "", `{"sub":"alice"}`), KindUnavailable, ReasonIdPBadResponse, DefaultRetryAfter, false},
		{"204", reply(204, "", ""), KindUnavailable, ReasonIdPMisconfigured, DefaultRetryAfter, false},
		{"302", reply(302, "", "", "Location", "/elsewhere"), KindUnavailable, ReasonIdPMisconfigured, DefaultRetryAfter, false},
		{"400", reply(400, "application/json", `{"error":"invalid_request"}`), KindInvalid, ReasonUserInfoRejected, 0, true},
		{"401", reply(401, "", "", "WWW-Authenticate", `Bearer error="invalid_token"`), KindInvalid, ReasonUserInfoRejected, 0, true},
		{"403", reply(403, "", ""), KindInvalid, ReasonUserInfoRejected, 0, true},
		{"404", reply(404, "text/plain", "not found"), KindUnavailable, ReasonIdPMisconfigured, DefaultRetryAfter, false},
		{"405", reply(405, "", ""), KindUnavailable, ReasonIdPMisconfigured, DefaultRetryAfter, false},
		{"429 Retry-After seconds", reply(429, "", "", "Retry-After", "7"), KindUnavailable, ReasonIdPUnavailable, 7 * time.Second, false},
		{"500", reply(500, "", ""), KindUnavailable, ReasonIdPUnavailable, DefaultRetryAfter, false},
		{"502 Retry-After capped", reply(502, "", "", "Retry-After", "99999999999999999999"), KindUnavailable, ReasonIdPUnavailable, DefaultRetryAfter, false},
		{"503 Retry-After huge", reply(503, "", "", "Retry-After", "86400"), KindUnavailable, ReasonIdPUnavailable, time.Hour, false},
		{"503 Retry-After date", reply(503, "", "", "Retry-After", httpDate), KindUnavailable, ReasonIdPUnavailable, 120 * time.Second, false},
		{"503 Retry-After zero", reply(503, "", "", "Retry-After", "0"), KindUnavailable, ReasonIdPUnavailable, time.Second, false},
		{"504 Retry-After junk", reply(504, "", "", "Retry-After", "soon"), KindUnavailable, ReasonIdPUnavailable, DefaultRetryAfter, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newUserInfoFixture(t, checkBearer(bearerToken, tt.handler), nil)

			for attempt := 1; attempt <= 2; attempt++ {
				tok, res, err := f.a.Authenticate(context.Background(), bearerToken, f.resolveFunc)
				if tok == nil {
					t.Fatalf("attempt %d: no token returned", attempt)
				}
				if tt.kind == 0 {
					if err != nil {
						t.Fatalf("attempt %d: error = %v; want success", attempt, err)
					}
					if *res != testResult {
						t.Fatalf("attempt %d: result = %+v; want %+v", attempt, *res, testResult)
					}
					continue
				}
				e := errorOf(t, err)
				wantReason := tt.reason
				if attempt == 2 && tt.cached {
					wantReason = ReasonNegativeCache
				}
				if e.Kind != tt.kind || e.Reason != wantReason || e.RetryAfter != tt.retryAfter {
					t.Fatalf("attempt %d: error = %s/%s retry %v; want %s/%s retry %v", attempt, e.Kind, e.Reason, e.RetryAfter, tt.kind, wantReason, tt.retryAfter)
				}
				if res != nil {
					t.Fatalf("attempt %d: result with error", attempt)
				}
			}
			wantCalls := int64(2)
			if tt.cached {
				wantCalls = 1
			}
			if got := f.calls.Load(); got != wantCalls {
				t.Errorf("userinfo calls = %d; want %d", got, wantCalls)
			}
			wantResolve := int64(0)
			if tt.kind == 0 {
				wantResolve = 1
			}
			if got := f.resolve.Load(); got != wantResolve {
				t.Errorf("resolve calls = %d; want %d", got, wantResolve)
			}
			if f.redirected.Load() != 0 {
				t.Error("a redirect was followed")
			}
			if v := f.badReq.Load(); v != nil {
				t.Errorf("bad userinfo request: %v", v)
			}
		})
	}
}

func TestUserInfoBodyCap(t *testing.T) {
	// body returns a JSON object of exactly n bytes.
	body := func(n int) string {
		const head, tail = `{"sub":"alice","pad":"`, `"}`
		return head + strings.Repeat("x", n-len(head)-len(tail)) + tail
	}
	tests := []struct {
		name    string
		size    int
		chunked bool
		ok      bool
	}{
		{"64 KiB with length", MaxUserInfoBody, false, true},
		{"64 KiB chunked", MaxUserInfoBody, true, true},
		{"64 KiB + 1 with length", MaxUserInfoBody + 1, false, false},
		{"64 KiB + 1 chunked", MaxUserInfoBody + 1, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := body(tt.size)
			f := newUserInfoFixture(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				if !tt.chunked {
					w.Header().Set("Content-Length", strconv.Itoa(len(b)))
					_, _ = w.Write([]byte(b))
					return
				}
				for i := 0; i < len(b); i += 1000 {
					_, _ = w.Write([]byte(b[i:min(i+1000, len(b))]))
					w.(http.Flusher).Flush()
				}
			}, nil)
			_, _, err := f.a.Authenticate(context.Background(), bearerToken, f.resolveFunc)
			if tt.ok {
				if err != nil {
					t.Fatalf("error = %v; want success", err)
				}
				return
			}
			if e := errorOf(t, err); e.Kind != KindUnavailable || e.Reason != ReasonIdPBadResponse {
				t.Fatalf("error = %s/%s; want unavailable/%s", e.Kind, e.Reason, ReasonIdPBadResponse)
			}
		})
	}
}

func TestUserInfoHugeBodyBoundedMemory(t *testing.T) {
	const total = 10 << 20
	for _, declared := range []bool{false, true} {
		t.Run(fmt.Sprintf("content-length=%v", declared), func(t *testing.T) {
			chunk := []byte(strings.Repeat(" ", 32<<10))
			var written atomic.Int64
			f := newUserInfoFixture(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				if declared {
					w.Header().Set("Content-Length", strconv.Itoa(total))
				}
				for n := 0; n < total; n += len(chunk) {
					if _, err := w.Write(chunk); err != nil {
						return // the client hung up, as it should
					}
					written.Add(int64(len(chunk)))
				}
			}, nil)
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, _, err := f.a.Authenticate(context.Background(), bearerToken, f.resolveFunc)
			runtime.ReadMemStats(&after)
			if e := errorOf(t, err); e.Kind != KindUnavailable || e.Reason != ReasonIdPBadResponse {
				t.Fatalf("error = %s/%s; want unavailable/%s", e.Kind, e.Reason, ReasonIdPBadResponse)
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 3<<20 {
				t.Errorf("allocated %d bytes for a %d-byte body; want the read bounded near %d", alloc, total, MaxUserInfoBody)
			}
		})
	}
}

func TestUserInfoTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	release := make(chan struct{})
	f := newUserInfoFixture(t, func(w http.ResponseWriter, r *http.Request) {
		select { // hang until the client gives up (or the test ends)
		case <-r.Context().Done():
		case <-release:
		}
	}, func(p *config.Provider) { p.UserInfoTimeout = config.Duration{Duration: timeout} })
	defer close(release)

	for attempt := 1; attempt <= 2; attempt++ {
		start := time.Now()
		_, _, err := f.a.Authenticate(context.Background(), bearerToken, f.resolveFunc)
		elapsed := time.Since(start)
		e := errorOf(t, err)
		if e.Kind != KindUnavailable || e.Reason != ReasonIdPUnavailable || e.RetryAfter != DefaultRetryAfter {
			t.Fatalf("error = %s/%s retry %v; want unavailable/%s retry %v", e.Kind, e.Reason, e.RetryAfter, ReasonIdPUnavailable, DefaultRetryAfter)
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("error %v does not wrap context.DeadlineExceeded", err)
		}
		if elapsed < timeout || elapsed > timeout+time.Second {
			t.Errorf("took %v; want between %v and %v", elapsed, timeout, timeout+time.Second)
		}
	}
	if got := f.calls.Load(); got != 2 {
		t.Errorf("userinfo calls = %d; want 2 (a timeout is never cached)", got)
	}
}

func TestUserInfoConnectionRefused(t *testing.T) {
	f := newUserInfoFixture(t, reply(200, "application/json", `{}`), nil)
	f.srv.Close() // nothing listens any more
	_, _, err := f.a.Authenticate(context.Background(), bearerToken, f.resolveFunc)
	if e := errorOf(t, err); e.Kind != KindUnavailable || e.Reason != ReasonIdPUnavailable || e.RetryAfter != DefaultRetryAfter {
		t.Fatalf("error = %s/%s retry %v; want unavailable/%s", e.Kind, e.Reason, e.RetryAfter, ReasonIdPUnavailable)
	}
	if strings.Contains(err.Error(), bearerToken) {
		t.Error("error text contains the token")
	}
}

func TestRetryAfter(t *testing.T) {
	tests := []struct {
		header string
		want   time.Duration
	}{
		{"", DefaultRetryAfter},
		{"  ", DefaultRetryAfter},
		{"12", 12 * time.Second},
		{" 12 ", 12 * time.Second},
		{"0", time.Second},
		{"-5", DefaultRetryAfter},
		{"3600", time.Hour},
		{"3601", time.Hour},
		{"18446744073709551615", time.Hour},
		{"1.5", DefaultRetryAfter},
		{testNow.Add(90 * time.Second).UTC().Format(http.TimeFormat), 90 * time.Second},
		{testNow.Add(-90 * time.Second).UTC().Format(http.TimeFormat), time.Second},
		{testNow.Add(48 * time.Hour).UTC().Format(http.TimeFormat), time.Hour},
		{"Wed, 99 Foo 2024", DefaultRetryAfter},
	}
	for _, tt := range tests {
		if got := retryAfter(tt.header, testNow); got != tt.want {
			t.Errorf("retryAfter(%q) = %v; want %v", tt.header, got, tt.want)
		}
	}
}
