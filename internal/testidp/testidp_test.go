package testidp_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"

	"github.com/fhirgate/fhirgate/internal/testidp"
)

func get(t *testing.T, idp *testidp.IdP, url, token string) (int, http.Header, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := idp.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body := map[string]any{}
	raw, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(raw, &body)
	return resp.StatusCode, resp.Header, body
}

func TestDiscoveryAndJWKS(t *testing.T) {
	idp := testidp.New(t)
	status, _, doc := get(t, idp, idp.DiscoveryURL(), "")
	if status != 200 || doc["issuer"] != idp.Issuer() || doc["jwks_uri"] != idp.JWKSURL() ||
		doc["userinfo_endpoint"] != idp.UserInfoURL() {
		t.Fatalf("discovery = %d %v", status, doc)
	}

	resp, err := idp.Client().Get(idp.JWKSURL())
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, private := range []string{`"d"`, `"p"`, `"q"`, `"dp"`} {
		if strings.Contains(string(raw), private) {
			t.Fatalf("JWKS publishes private member %s: %s", private, raw)
		}
	}
	// Every kind of token the IdP mints verifies against its published JWKS.
	kf, err := keyfunc.NewJWKSetJSON(raw)
	if err != nil {
		t.Fatalf("JWKS does not parse: %v", err)
	}
	for _, opts := range [][]testidp.TokenOption{nil, {testidp.ES256()}} {
		tok := idp.Token(idp.Claims("alice", time.Hour), opts...)
		if _, err := jwt.Parse(tok, kf.Keyfunc); err != nil {
			t.Errorf("token does not verify with the JWKS: %v", err)
		}
	}
	forged := idp.Token(idp.Claims("alice", time.Hour), testidp.WithForeignKey())
	if _, err := jwt.Parse(forged, kf.Keyfunc); !errors.Is(err, jwt.ErrTokenSignatureInvalid) {
		t.Errorf("foreign-key token: err = %v, want invalid signature", err)
	}
	if idp.DiscoveryCalls() != 1 || idp.JWKSCalls() != 1 {
		t.Errorf("calls: discovery %d jwks %d, want 1 and 1", idp.DiscoveryCalls(), idp.JWKSCalls())
	}
	idp.ResetCounts()
	if idp.JWKSCalls() != 0 || idp.DiscoveryCalls() != 0 {
		t.Error("ResetCounts left counts")
	}
}

func header(t *testing.T, tok string) map[string]any {
	t.Helper()
	h, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]any{}
	if err := json.Unmarshal(h, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestTokenHeaders(t *testing.T) {
	idp := testidp.New(t)
	claims := idp.Claims("alice", time.Hour)
	tests := []struct {
		name string
		opts []testidp.TokenOption
		want map[string]any // nil value: field absent
	}{
		{"default", nil, map[string]any{"alg": "RS256", "typ": "JWT", "kid": idp.RSAKeyID()}},
		{"es256", []testidp.TokenOption{testidp.ES256()}, map[string]any{"alg": "ES256", "kid": idp.ECKeyID()}},
		{"no kid", []testidp.TokenOption{testidp.WithoutKID()}, map[string]any{"kid": nil}},
		{"custom kid", []testidp.TokenOption{testidp.WithKID("other")}, map[string]any{"kid": "other"}},
		{"typ at+jwt", []testidp.TokenOption{testidp.WithHeader("typ", "at+jwt")}, map[string]any{"typ": "at+jwt"}},
		{"typ removed", []testidp.TokenOption{testidp.WithHeader("typ", nil)}, map[string]any{"typ": nil}},
		{"crit", []testidp.TokenOption{testidp.WithHeader("crit", []string{"exp"})}, map[string]any{"crit": []any{"exp"}}},
		{"alg none", []testidp.TokenOption{testidp.WithAlgNone()}, map[string]any{"alg": "none", "kid": nil}},
		{"hs256", []testidp.TokenOption{testidp.WithHS256([]byte("k"))}, map[string]any{"alg": "HS256"}},
		{"foreign keeps real kid", []testidp.TokenOption{testidp.WithForeignKey()}, map[string]any{"kid": idp.RSAKeyID()}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := header(t, idp.Token(claims, tc.opts...))
			for k, want := range tc.want {
				got, ok := h[k]
				if want == nil {
					if ok {
						t.Errorf("header %s = %v, want absent", k, got)
					}
					continue
				}
				gotJSON, _ := json.Marshal(got)
				wantJSON, _ := json.Marshal(want)
				if string(gotJSON) != string(wantJSON) {
					t.Errorf("header %s = %s, want %s", k, gotJSON, wantJSON)
				}
			}
		})
	}
}

func TestUserInfo(t *testing.T) {
	idp := testidp.New(t)
	good := idp.Claims("alice", time.Hour)
	withFHIRUser := idp.Claims("bob", time.Hour)
	withFHIRUser["fhirUser"] = "Practitioner/123"
	expired := idp.Claims("alice", -time.Minute)
	otherIssuer := idp.Claims("alice", time.Hour)
	otherIssuer["iss"] = "https://elsewhere.example"
	noExp := idp.Claims("alice", time.Hour)
	delete(noExp, "exp")

	tests := []struct {
		name     string
		token    string
		status   int
		sub      string
		fhirUser string
	}{
		{"rs256", idp.Token(good), 200, "alice", ""},
		{"es256", idp.Token(good, testidp.ES256()), 200, "alice", ""},
		{"fhirUser echoed", idp.Token(withFHIRUser), 200, "bob", "Practitioner/123"},
		{"no kid", idp.Token(good, testidp.WithoutKID()), 200, "alice", ""},
		{"expired", idp.Token(expired), 401, "", ""},
		{"no exp", idp.Token(noExp), 401, "", ""},
		{"other issuer", idp.Token(otherIssuer), 401, "", ""},
		{"foreign key", idp.Token(good, testidp.WithForeignKey()), 401, "", ""},
		{"unknown kid", idp.Token(good, testidp.WithKID("nope")), 401, "", ""},
		{"alg none", idp.Token(good, testidp.WithAlgNone()), 401, "", ""},
		{"hs256", idp.Token(good, testidp.WithHS256([]byte("secret"))), 401, "", ""},
		{"garbage", "a.b.c", 401, "", ""},
		{"no token", "", 401, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, h, body := get(t, idp, idp.UserInfoURL(), tc.token)
			if status != tc.status {
				t.Fatalf("status = %d, want %d (body %v)", status, tc.status, body)
			}
			if status == 401 && !strings.Contains(h.Get("WWW-Authenticate"), "invalid_token") {
				t.Errorf("401 without WWW-Authenticate invalid_token: %q", h.Get("WWW-Authenticate"))
			}
			if status != 200 {
				return
			}
			if body["sub"] != tc.sub {
				t.Errorf("sub = %v, want %q", body["sub"], tc.sub)
			}
			if got, _ := body["fhirUser"].(string); got != tc.fhirUser {
				t.Errorf("fhirUser = %q, want %q", got, tc.fhirUser)
			}
		})
	}
	if got, want := idp.UserInfoCalls(), int64(len(tests)); got != want {
		t.Errorf("UserInfoCalls = %d, want %d", got, want)
	}
}

func TestUserInfoKnobs(t *testing.T) {
	tests := []struct {
		name   string
		setup  func(idp *testidp.IdP)
		token  func(t *testing.T, idp *testidp.IdP) string
		status int
		check  func(t *testing.T, h http.Header, body map[string]any)
	}{
		{"status 503 with retry-after", func(idp *testidp.IdP) { idp.SetStatus(503, "7") }, nil, 503,
			func(t *testing.T, h http.Header, _ map[string]any) {
				if h.Get("Retry-After") != "7" {
					t.Errorf("Retry-After = %q", h.Get("Retry-After"))
				}
			}},
		{"status 429 without retry-after", func(idp *testidp.IdP) { idp.SetStatus(429, "") }, nil, 429,
			func(t *testing.T, h http.Header, _ map[string]any) {
				if _, ok := h["Retry-After"]; ok {
					t.Error("unexpected Retry-After")
				}
			}},
		{"status reset", func(idp *testidp.IdP) { idp.SetStatus(500, ""); idp.SetStatus(0, "") }, nil, 200, nil},
		{"forced 200 accepts a forged token", func(idp *testidp.IdP) { idp.SetStatus(200, "") },
			func(_ *testing.T, idp *testidp.IdP) string {
				return idp.Token(idp.Claims("mallory", time.Hour), testidp.WithForeignKey())
			}, 200,
			func(t *testing.T, _ http.Header, body map[string]any) {
				if body["sub"] != "mallory" {
					t.Errorf("sub = %v", body["sub"])
				}
			}},
		{"sub override", func(idp *testidp.IdP) { idp.SetSubOverride("someone-else") }, nil, 200,
			func(t *testing.T, _ http.Header, body map[string]any) {
				if body["sub"] != "someone-else" {
					t.Errorf("sub = %v", body["sub"])
				}
			}},
		{"body", func(idp *testidp.IdP) { idp.SetBody([]byte(`{"custom":true}`)) }, nil, 200,
			func(t *testing.T, _ http.Header, body map[string]any) {
				if body["custom"] != true || body["sub"] != nil {
					t.Errorf("body = %v", body)
				}
			}},
		{"handler", func(idp *testidp.IdP) {
			idp.SetUserInfoHandler(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(418) })
		}, nil, 418, nil},
		{"rotated key: old token rejected", func(idp *testidp.IdP) {}, func(t *testing.T, idp *testidp.IdP) string {
			old := idp.Token(idp.Claims("alice", time.Hour))
			oldKID := idp.RSAKeyID()
			if idp.RotateKey() == oldKID {
				t.Fatal("RotateKey kept the kid")
			}
			return old
		}, 401, nil},
		{"rotated key: new token accepted", func(idp *testidp.IdP) { idp.RotateKey() }, nil, 200, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			idp := testidp.New(t)
			tc.setup(idp)
			tok := idp.Token(idp.Claims("alice", time.Hour))
			if tc.token != nil {
				tok = tc.token(t, idp)
			}
			status, h, body := get(t, idp, idp.UserInfoURL(), tok)
			if status != tc.status {
				t.Fatalf("status = %d, want %d", status, tc.status)
			}
			if tc.check != nil {
				tc.check(t, h, body)
			}
			if idp.UserInfoCalls() != 1 {
				t.Errorf("UserInfoCalls = %d, want 1", idp.UserInfoCalls())
			}
		})
	}
}

func TestUserInfoDelayAndClock(t *testing.T) {
	past := time.Now().Add(-24 * time.Hour)
	idp := testidp.New(t, testidp.WithClock(func() time.Time { return past }), testidp.WithAudience("fhirgate"))
	claims := idp.Claims("alice", time.Hour) // expired by real time, valid on the IdP's clock
	if claims["aud"] != "fhirgate" {
		t.Fatalf("aud = %v", claims["aud"])
	}
	if status, _, _ := get(t, idp, idp.UserInfoURL(), idp.Token(claims)); status != 200 {
		t.Fatalf("status on injected clock = %d, want 200", status)
	}

	idp.SetDelay(time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, idp.UserInfoURL(), nil)
	req.Header.Set("Authorization", "Bearer "+idp.Token(claims))
	if resp, err := idp.Client().Do(req); !errors.Is(err, context.DeadlineExceeded) {
		if resp != nil {
			resp.Body.Close()
		}
		t.Fatalf("delayed userinfo: err = %v, want deadline exceeded", err)
	}
}

func TestConcurrentUse(t *testing.T) {
	idp := testidp.New(t)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i == 0 {
				idp.RotateKey()
			}
			idp.SetSubOverride("")
			tok := idp.Token(idp.Claims("alice", time.Hour))
			resp, err := idp.Client().Get(idp.JWKSURL())
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			if tok == "" {
				t.Error("empty token")
			}
		}()
	}
	wg.Wait()
	if idp.JWKSCalls() != 8 {
		t.Errorf("JWKSCalls = %d, want 8", idp.JWKSCalls())
	}
}
