package extauth

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/fhirgate/fhirgate/cache"
	"github.com/fhirgate/fhirgate/config"
	"github.com/fhirgate/fhirgate/internal/testidp"
)

// idpFixture is an Authenticator trusting one testidp IdP, on the real clock
// and an in-process cache.
type idpFixture struct {
	idp     *testidp.IdP
	a       *Authenticator
	mem     *cache.Memory
	resolve atomic.Int64
}

func newIdPFixture(t *testing.T, jwks bool, mutate func(*config.Provider)) *idpFixture {
	t.Helper()
	f := &idpFixture{idp: testidp.New(t), mem: cache.NewMemory(0, nil)}
	p := testProvider(f.idp.Issuer())
	p.UserInfoURL = f.idp.UserInfoURL()
	if jwks {
		p.JWKSURI = f.idp.JWKSURL()
	}
	if mutate != nil {
		mutate(&p)
	}
	a, err := New([]config.Provider{p}, Options{Cache: f.mem, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	f.a = a
	return f
}

func (f *idpFixture) resolveFunc(_ context.Context, tok *Token) (*Result, error) {
	f.resolve.Add(1)
	return &Result{Project: "p1", Membership: "m-" + tok.Subject, Profile: "Practitioner/1", Login: "l1"}, nil
}

func TestConcurrentMissesShareOneValidation(t *testing.T) {
	for _, jwks := range []bool{false, true} {
		t.Run(fmt.Sprintf("jwks=%v", jwks), func(t *testing.T) {
			f := newIdPFixture(t, jwks, nil)
			f.idp.SetDelay(200 * time.Millisecond) // IdP latency, so that the misses overlap
			raw := f.idp.Token(f.idp.Claims("alice", time.Hour))

			const n = 100
			var wg sync.WaitGroup
			errs := make(chan error, n)
			start := make(chan struct{})
			for i := 0; i < n; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					_, res, err := f.a.Authenticate(context.Background(), raw, f.resolveFunc)
					if err == nil && res.Membership != "m-alice" {
						err = fmt.Errorf("result %+v", res)
					}
					errs <- err
				}()
			}
			close(start)
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			if got := f.idp.UserInfoCalls(); got != 1 {
				t.Errorf("userinfo calls = %d; want 1", got)
			}
			if got := f.resolve.Load(); got != 1 {
				t.Errorf("resolve calls = %d; want 1", got)
			}
			if got := counterValue(t, f.a.metrics.flights); got != 1 {
				t.Errorf("validations = %v; want 1", got)
			}
			collapsed := counterValue(t, f.a.metrics.collapsed)
			hits := counterValue(t, f.a.metrics.cache.WithLabelValues("hit"))
			if collapsed+hits != n-1 {
				t.Errorf("collapsed %v + cache hits %v; want %d", collapsed, hits, n-1)
			}
		})
	}
}

func TestRejectedTokenReplayedCostsOneCall(t *testing.T) {
	// No jwksUri: the IdP itself finds the forged signature and answers 401.
	f := newIdPFixture(t, false, nil)
	raw := f.idp.Token(f.idp.Claims("alice", time.Hour), testidp.WithForeignKey())
	for i := 1; i <= 10; i++ {
		_, _, err := f.a.Authenticate(context.Background(), raw, f.resolveFunc)
		want := ReasonUserInfoRejected
		if i > 1 {
			want = ReasonNegativeCache
		}
		if e := errorOf(t, err); e.Kind != KindInvalid || e.Reason != want {
			t.Fatalf("attempt %d: %s/%s; want invalid/%s", i, e.Kind, e.Reason, want)
		}
	}
	if got := f.idp.UserInfoCalls(); got != 1 {
		t.Errorf("userinfo calls = %d; want 1", got)
	}
	if f.resolve.Load() != 0 {
		t.Error("resolve was called for a rejected token")
	}
}

func TestIdPAnswers(t *testing.T) {
	tests := []struct {
		name   string
		setup  func(*testidp.IdP)
		kind   Kind
		reason string
		retry  time.Duration
	}{
		{"accepted", func(*testidp.IdP) {}, 0, "", 0},
		{"sub mismatch", func(p *testidp.IdP) { p.SetSubOverride("mallory") }, KindInvalid, ReasonUserInfoSubMismatch, 0},
		{"rate limited", func(p *testidp.IdP) { p.SetStatus(429, "17") }, KindUnavailable, ReasonIdPUnavailable, 17 * time.Second},
		{"down", func(p *testidp.IdP) { p.SetStatus(503, "") }, KindUnavailable, ReasonIdPUnavailable, DefaultRetryAfter},
		{"rejected", func(p *testidp.IdP) { p.SetStatus(403, "") }, KindInvalid, ReasonUserInfoRejected, 0},
		{"slow", func(p *testidp.IdP) { p.SetDelay(10 * time.Second) }, KindUnavailable, ReasonIdPUnavailable, DefaultRetryAfter},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newIdPFixture(t, true, func(p *config.Provider) { p.UserInfoTimeout = config.Duration{Duration: 300 * time.Millisecond} })
			tt.setup(f.idp)
			raw := f.idp.Token(f.idp.Claims("alice", time.Hour))
			start := time.Now()
			_, _, err := f.a.Authenticate(context.Background(), raw, f.resolveFunc)
			if time.Since(start) > 300*time.Millisecond+time.Second {
				t.Errorf("took %v; want at most the userinfo timeout + 1s", time.Since(start))
			}
			if tt.kind == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if e := errorOf(t, err); e.Kind != tt.kind || e.Reason != tt.reason || e.RetryAfter != tt.retry {
				t.Fatalf("%s/%s retry %v; want %s/%s retry %v", e.Kind, e.Reason, e.RetryAfter, tt.kind, tt.reason, tt.retry)
			}
		})
	}
}

func TestJWKSRefusesBadSignatures(t *testing.T) {
	f := newIdPFixture(t, true, func(p *config.Provider) { p.Algorithms = []string{"RS256", "ES256", "PS256"} })
	claims := func() map[string]any { return f.idp.Claims("alice", time.Hour) }
	otherEC, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	// The classic confusion attack: HMAC keyed with the IdP's public key.
	jwksKey := fetchRSAPublicKeyPEM(t, f.idp)

	tests := []struct {
		name   string
		raw    string
		reason string // "" means accepted
	}{
		{"RS256 accepted", f.idp.Token(claims()), ""},
		{"ES256 accepted", f.idp.Token(claims(), testidp.ES256()), ""},
		{"no kid accepted", f.idp.Token(claims(), testidp.WithoutKID()), ""},
		{"forged signature under real kid", f.idp.Token(claims(), testidp.WithForeignKey()), ReasonSignature},
		{"foreign key without kid", f.idp.Token(claims(), testidp.WithForeignKey(), testidp.WithoutKID()), ReasonSignature},
		{"EC key of another party under real kid", signES256(t, otherEC, f.idp.ECKeyID(), claims()), ReasonSignature},
		{"ES256 under the RSA kid", f.idp.Token(claims(), testidp.ES256(), testidp.WithKID(f.idp.RSAKeyID())), ReasonUnknownKey},
		{"RS256 header over an EC signature", f.idp.Token(claims(), testidp.ES256(), testidp.WithHeader("alg", "RS256")), ReasonUnknownKey},
		{"PS256 header over an RS256 signature", f.idp.Token(claims(), testidp.WithHeader("alg", "PS256")), ReasonUnknownKey},
		{"HS256 keyed with the RSA public key", f.idp.Token(claims(), testidp.WithHS256(jwksKey), testidp.WithKID(f.idp.RSAKeyID())), ReasonAlgNotAllowed},
		{"alg none", f.idp.Token(claims(), testidp.WithAlgNone()), ReasonMalformed},
		{"alg none with a signature", strings.TrimSuffix(f.idp.Token(claims(), testidp.WithAlgNone()), ".") + ".c2ln", ReasonAlgNotAllowed},
		{"jku", f.idp.Token(claims(), testidp.WithHeader("jku", "http://127.0.0.1:1/jwks.json")), ReasonKeyHeader},
		{"x5u", f.idp.Token(claims(), testidp.WithHeader("x5u", "http://127.0.0.1:1/cert.pem")), ReasonKeyHeader},
		{"jwk", f.idp.Token(claims(), testidp.WithHeader("jwk", map[string]string{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"})), ReasonKeyHeader},
		{"x5c", f.idp.Token(claims(), testidp.WithHeader("x5c", []string{"MIIB"})), ReasonKeyHeader},
		{"crit", f.idp.Token(claims(), testidp.WithHeader("crit", []string{"exp"})), ReasonCritHeader},
		{"unknown kid", f.idp.Token(claims(), testidp.WithKID("nobody")), ReasonUnknownKey},
		{"tampered payload", tamper(t, f.idp.Token(claims())), ReasonSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			callsBefore := f.idp.UserInfoCalls()
			lenBefore := f.mem.Len()
			_, _, err := f.a.Authenticate(context.Background(), tt.raw, f.resolveFunc)
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("error = %v; want accepted", err)
				}
				return
			}
			if e := errorOf(t, err); e.Kind != KindInvalid || e.Reason != tt.reason {
				t.Fatalf("%s/%s; want invalid/%s", e.Kind, e.Reason, tt.reason)
			}
			if got := f.idp.UserInfoCalls() - callsBefore; got != 0 {
				t.Errorf("userinfo calls = %d; want 0", got)
			}
			if f.mem.Len() != lenBefore {
				t.Errorf("cache grew from %d to %d entries; want nothing written", lenBefore, f.mem.Len())
			}
		})
	}
}

// tamper changes sub in a signed token without re-signing it.
func tamper(t *testing.T, raw string) string {
	t.Helper()
	parts := strings.Split(raw, ".")
	payload, err := decodeSegment(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	changed := strings.Replace(string(payload), `"sub":"alice"`, `"sub":"admin"`, 1)
	if changed == string(payload) {
		t.Fatal("tamper: sub not found")
	}
	return parts[0] + "." + b64(changed) + "." + parts[2]
}

func signES256(t *testing.T, key *ecdsa.PrivateKey, kid string, claims map[string]any) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims(claims))
	tok.Header["kid"] = kid
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// fetchRSAPublicKeyPEM returns the IdP's published RSA key as PEM, the way an
// attacker would obtain it.
func fetchRSAPublicKeyPEM(t *testing.T, idp *testidp.IdP) []byte {
	t.Helper()
	kf := keyfuncFromJWKS(t, idp.JWKSURL())
	key, err := kf(&jwt.Token{Header: map[string]any{"kid": idp.RSAKeyID(), "alg": "RS256"}, Method: jwt.SigningMethodRS256})
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func TestBindKeyToAlg(t *testing.T) {
	rsa2048, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	tests := []struct {
		alg  string
		key  any
		want bool
	}{
		{"RS256", &rsa2048.PublicKey, true},
		{"PS512", &rsa2048.PublicKey, true},
		{"RS256", &rsa1024.PublicKey, false},
		{"RS256", &p256.PublicKey, false},
		{"ES256", &p256.PublicKey, true},
		{"ES256", &p384.PublicKey, false},
		{"ES384", &p384.PublicKey, true},
		{"ES256", &rsa2048.PublicKey, false},
		{"EdDSA", edPub, true},
		{"EdDSA", &p256.PublicKey, false},
		{"HS256", &rsa2048.PublicKey, false},
		{"HS256", []byte("secret"), false},
		{"RS256", []byte("secret"), false},
		{"none", jwt.UnsafeAllowNoneSignatureType, false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%T", tt.alg, tt.key), func(t *testing.T) {
			method := jwt.GetSigningMethod(tt.alg)
			kf := bindKeyToAlg(func(*jwt.Token) (any, error) { return tt.key, nil })
			got, err := kf(&jwt.Token{Method: method})
			if (err == nil) != tt.want {
				t.Fatalf("single key: err = %v; want ok=%v", err, tt.want)
			}
			if tt.want && fmt.Sprint(got) != fmt.Sprint(tt.key) {
				t.Fatal("single key: a different key came back")
			}
			// In a key set, only fitting keys survive.
			set := jwt.VerificationKeySet{Keys: []jwt.VerificationKey{tt.key, []byte("hmac")}}
			kf = bindKeyToAlg(func(*jwt.Token) (any, error) { return set, nil })
			got, err = kf(&jwt.Token{Method: method})
			if (err == nil) != tt.want {
				t.Fatalf("key set: err = %v; want ok=%v", err, tt.want)
			}
			if tt.want && len(got.(jwt.VerificationKeySet).Keys) != 1 {
				t.Fatalf("key set: %d keys survive; want 1", len(got.(jwt.VerificationKeySet).Keys))
			}
		})
	}
}

func TestKeyRotation(t *testing.T) {
	f := newIdPFixture(t, true, nil)
	ctx := context.Background()
	if _, _, err := f.a.Authenticate(ctx, f.idp.Token(f.idp.Claims("alice", time.Hour)), f.resolveFunc); err != nil {
		t.Fatal(err)
	}
	if got := f.idp.JWKSCalls(); got != 1 {
		t.Fatalf("JWKS fetches = %d; want 1", got)
	}
	f.idp.RotateKey()
	raw := f.idp.Token(f.idp.Claims("bob", time.Hour))
	if _, _, err := f.a.Authenticate(ctx, raw, f.resolveFunc); err != nil {
		t.Fatalf("token under the new key: %v", err)
	}
	if got := f.idp.JWKSCalls(); got != 2 {
		t.Fatalf("JWKS fetches = %d; want 2 (one refresh for the new kid)", got)
	}
	// A second new-key token needs no further fetch.
	if _, _, err := f.a.Authenticate(ctx, f.idp.Token(f.idp.Claims("carol", time.Hour)), f.resolveFunc); err != nil {
		t.Fatal(err)
	}
	if got := f.idp.JWKSCalls(); got != 2 {
		t.Fatalf("JWKS fetches = %d; want still 2", got)
	}
}

func TestUnknownKIDStormIsRateLimited(t *testing.T) {
	f := newIdPFixture(t, true, nil)
	const n = 500
	tokens := make([]string, n)
	for i := range tokens {
		tokens[i] = f.idp.Token(f.idp.Claims("alice", time.Hour), testidp.WithKID(newRandomKID(t)))
	}
	var wg sync.WaitGroup
	var wrong atomic.Int64
	start := time.Now()
	for _, raw := range tokens {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, err := f.a.Authenticate(context.Background(), raw, f.resolveFunc)
			if e, ok := err.(*Error); !ok || e.Kind != KindInvalid || e.Reason != ReasonUnknownKey {
				wrong.Add(1)
			}
		}()
	}
	wg.Wait()
	if wrong.Load() != 0 {
		t.Errorf("%d tokens were not refused as unknown_kid", wrong.Load())
	}
	if got := f.idp.JWKSCalls(); got > 2 {
		t.Errorf("JWKS fetches = %d; want at most 2", got)
	}
	if f.idp.UserInfoCalls() != 0 {
		t.Errorf("userinfo calls = %d; want 0", f.idp.UserInfoCalls())
	}
	// Refused at once, not queued behind the refresh limiter.
	t.Logf("storm took %v", time.Since(start))
	if d := time.Since(start); d > jwksHTTPTimeout {
		t.Errorf("storm took %v; want well under %v", d, jwksHTTPTimeout)
	}
}

func newRandomKID(t *testing.T) string {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", b)
}

func TestJWKSUnavailable(t *testing.T) {
	// The real key set followed by padding: without the cap it would load
	// and the token would verify.
	var realJWKS atomic.Value // []byte, set once the IdP runs
	tests := []struct {
		name    string
		handler http.HandlerFunc
	}{
		{"500", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) }},
		{"redirect", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/other", http.StatusFound) }},
		{"over 1 MiB", func(w http.ResponseWriter, r *http.Request) {
			keys := realJWKS.Load().([]byte)
			big := string(keys[:bytes.LastIndexByte(keys, '}')]) + `,"pad":"` + strings.Repeat("x", MaxJWKSBody) + `"}`
			w.Header().Set("Content-Type", "application/json")
			for i := 0; i < len(big); i += 4096 { // chunked: no Content-Length to trust
				_, _ = w.Write([]byte(big[i:min(i+4096, len(big))]))
				w.(http.Flusher).Flush()
			}
		}},
		{"under 1 MiB control", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(realJWKS.Load().([]byte))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var jwksCalls atomic.Int64
			jwksSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/other" {
					t.Error("JWKS redirect was followed")
				}
				jwksCalls.Add(1)
				tt.handler(w, r)
			}))
			t.Cleanup(jwksSrv.Close)
			f := newIdPFixture(t, true, func(p *config.Provider) { p.JWKSURI = jwksSrv.URL + "/jwks.json" })
			realJWKS.Store(fetch(t, f.idp.JWKSURL()))
			raw := f.idp.Token(f.idp.Claims("alice", time.Hour))
			_, _, err := f.a.Authenticate(context.Background(), raw, f.resolveFunc)
			if strings.HasSuffix(tt.name, "control") {
				if err != nil {
					t.Fatalf("control: %v", err)
				}
				return
			}
			if e := errorOf(t, err); e.Kind != KindUnavailable || e.Reason != ReasonJWKSUnavailable || e.RetryAfter != DefaultRetryAfter {
				t.Fatalf("%s/%s retry %v; want unavailable/%s", e.Kind, e.Reason, e.RetryAfter, ReasonJWKSUnavailable)
			}
			if f.idp.UserInfoCalls() != 0 || f.mem.Len() != 0 {
				t.Errorf("userinfo calls %d, cache entries %d; want 0, 0", f.idp.UserInfoCalls(), f.mem.Len())
			}
			if jwksCalls.Load() == 0 {
				t.Error("JWKS never fetched")
			}
		})
	}
}
